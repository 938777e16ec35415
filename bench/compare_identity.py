"""Are two compare outputs numerically identical? ``python bench/compare_identity.py BEFORE_DIR AFTER_DIR``

Both folders are ``compare.py`` outputs (``<sweep>/compare``). Prints the max absolute difference over every numeric
cell of ``summary.csv`` and ``tuned.csv`` (rows matched by ``job``, resp. ``variant`` and ``seed``; wall-time columns,
whose names hold ``wall``, left out) and over every number of ``hypothesis.md`` (in order of appearance; lines that
name a wall time left out). A cell numeric on one side only, a missing row or column, or a different count of numbers
is a mismatch (difference inf). Exit status 0 when every difference is 0, else 1.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

KEYS = {"summary.csv": ["job"], "tuned.csv": ["variant", "seed"]}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def csv_difference(before: Path, after: Path, keys: list[str]) -> tuple[float, str]:
    """Max absolute difference over the numeric cells of two CSV files, and where it is."""
    a, b = (pd.read_csv(p, dtype=str, keep_default_na=False).set_index(keys) for p in (before, after))
    if set(a.columns) != set(b.columns) or set(a.index) != set(b.index):
        return math.inf, (f"columns only before {sorted(set(a.columns) - set(b.columns))}, only after "
                          f"{sorted(set(b.columns) - set(a.columns))}; rows only before {sorted(set(a.index) - set(b.index))[:3]}, "
                          f"only after {sorted(set(b.index) - set(a.index))[:3]}")
    worst, where = 0.0, ""
    b = b.loc[a.index]
    for column in (c for c in a.columns if "wall" not in c):
        x, y = (pd.to_numeric(frame[column].replace("", "nan"), errors="coerce") for frame in (a, b))
        numeric_x, numeric_y = a[column].ne("") & x.notna(), b[column].ne("") & y.notna()
        text_x = a[column].replace("", "nan").str.lower().isin(["nan"])
        text_y = b[column].replace("", "nan").str.lower().isin(["nan"])
        # a cell that is a number (or empty) on one side must be one on the other
        mismatch = (numeric_x | text_x) != (numeric_y | text_y)
        mismatch |= (x.isna() != y.isna()) & (numeric_x | numeric_y | text_x | text_y)
        diff = (x - y).abs().where(x.notna() & y.notna(), 0.0).where(~mismatch, math.inf)
        if diff.max() > worst:
            worst, where = float(diff.max()), f"column {column}, row {diff.idxmax()}: {a.at[diff.idxmax(), column]!r} " \
                                                f"vs {b.at[diff.idxmax(), column]!r}"
    return worst, where


def markdown_difference(before: Path, after: Path) -> tuple[float, str]:
    """Max absolute difference over the numbers of two Markdown files, in order of appearance."""
    numbers = [[(float(m.group()), line) for line in p.read_text(encoding="utf-8").splitlines() if "wall" not in line.lower()
                for m in NUMBER.finditer(line)] for p in (before, after)]
    if len(numbers[0]) != len(numbers[1]):
        first = next((i for i, (x, y) in enumerate(zip(*numbers)) if x[0] != y[0]), min(map(len, numbers)))
        return math.inf, f"{len(numbers[0])} vs {len(numbers[1])} numbers; first difference at number {first}"
    worst, where = 0.0, ""
    for (x, line_x), (y, line_y) in zip(*numbers):
        if abs(x - y) > worst:
            worst, where = abs(x - y), f"{line_x.strip()[:100]!r} vs {line_y.strip()[:100]!r}"
    return worst, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    results = {name: csv_difference(args.before / name, args.after / name, keys) for name, keys in KEYS.items()}
    results["hypothesis.md"] = markdown_difference(args.before / "hypothesis.md", args.after / "hypothesis.md")
    for name, (worst, where) in results.items():
        print(f"{name}: max |difference| = {worst:g}" + (f" ({where})" if worst else ""))
    overall = max(worst for worst, _ in results.values())
    print(f"max absolute difference: {overall:g}")
    return 0 if overall == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
