"""Did a change that moves every result move the study's conclusions? ``python bench/variant_shift.py OLD/compare NEW/compare``

Both folders are ``compare.py`` outputs of the same study (same variants and seeds) made by two versions of the
code. For every variant (each job label of ``summary.csv``: plain variants and every grid point; and each tuned
variant of ``tuned.csv``, its chosen job per seed) and each of test accuracy overall, on the target classes and on
the retained ones: the old mean over seeds with its 95 % t-interval, the new mean, the difference in percentage
points, and whether the new mean lies inside the old interval. Prints a Markdown table (``--all``: every row, else
the rows outside and a count) and the number of (variant, metric) pairs outside; ``--paired`` adds the paired
t-test of new vs old over seeds (same seeds on both sides), which says whether a shift is more than seed noise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

METRICS = {"test/acc": "overall", "test/acc_target": "target", "test/acc_retained": "retained"}


def per_seed(compare_dir: Path) -> pd.DataFrame:
    """One row per (variant, seed): the test metrics of the job (tuned variants: of the chosen job)."""
    jobs = pd.read_csv(compare_dir / "summary.csv")
    jobs = jobs[jobs["status"] == "ok"]
    frames = [jobs[["variant", "seed", *METRICS]]]
    tuned_file = compare_dir / "tuned.csv"
    if tuned_file.is_file():
        tuned = pd.read_csv(tuned_file)
        label = tuned["variant"].where(tuned["variant"].str.endswith("(tuned)"), tuned["variant"] + " (tuned)")
        frames.append(tuned[["variant", "seed", *METRICS]].assign(variant=label))
    return pd.concat(frames, ignore_index=True).dropna(subset=["seed"]).astype({"seed": int})


def shifts(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for variant, group in old.groupby("variant", sort=False):
        theirs = new[new["variant"] == variant].set_index("seed")
        group = group.set_index("seed")
        for metric, name in METRICS.items():
            before = group[metric].dropna()
            after = theirs[metric].dropna() if metric in theirs else pd.Series(dtype=float)
            if len(before) < 2 or after.empty:
                continue
            half = stats.t.ppf(0.975, len(before) - 1) * before.std(ddof=1) / np.sqrt(len(before))
            low, high = before.mean() - half, before.mean() + half
            seeds = before.index.intersection(after.index)
            paired = stats.ttest_rel(after[seeds], before[seeds]).pvalue if len(seeds) > 1 else np.nan
            rows.append({"variant": variant, "metric": name, "n": len(before), "old_mean": 100 * before.mean(),
                         "old_low": 100 * low, "old_high": 100 * high, "new_mean": 100 * after.mean(),
                         "shift_pp": 100 * (after.mean() - before.mean()), "paired_p": paired,
                         "inside": bool(low <= after.mean() <= high) or np.isclose(after.mean(), before.mean())})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--all", action="store_true", help="print every row, not only those outside the interval")
    parser.add_argument("--paired", action="store_true", help="add the paired t-test p-value of new vs old")
    args = parser.parse_args()
    table = shifts(per_seed(args.old), per_seed(args.new))
    shown = table if args.all else table[~table["inside"]]
    columns = ["variant", "metric", "n", "old_mean", "old_low", "old_high", "new_mean", "shift_pp", "inside"]
    if args.paired:
        columns.insert(-1, "paired_p")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for _, row in shown.iterrows():
        cells = [f"{row[c]:.2f}" if isinstance(row[c], float) and c != "paired_p" else
                 f"{row[c]:.3g}" if c == "paired_p" else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")
    outside = int((~table["inside"]).sum())
    print(f"\n{len(table)} (variant, metric) pairs over {table['variant'].nunique()} variants; "
          f"new mean inside the old 95 % t-interval: {len(table) - outside}; outside: {outside}; "
          f"largest |shift| {table['shift_pp'].abs().max():.2f} pp")


if __name__ == "__main__":
    main()
