"""Write the comparison outputs of a sweep (CSV, markdown, self-contained HTML) into ``<sweep_dir>/compare/``.

The prose is in Jinja2 templates (``templates/``), tables come from :meth:`pandas.DataFrame.to_markdown`, report.html
is report.md through ``markdown`` (plots as ``data:`` URIs). Accuracies in percent (``91.23``), differences
``variant − reference`` in percentage points (``+1.20`` favours the variant); ``summary.csv`` keeps raw fractions.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import jinja2
import markdown
import pandas as pd

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare.plots import tradeoff_frame
from seqft_lightning.compare.stats import ALPHA, MIN_PAIRED_SEEDS, t_interval, wilcoxon_min_pairs
from seqft_lightning.io import atomic_write_text

DASH = "–"
#: Columns of an empty ``tuned.csv`` (a sweep without knob grids or merging λ).
TUNED_COLUMNS = ["variant", "kind", "knob", "grid", "seed", "chosen", "fallback", "on_edge", "edge", "limit_point",
                 "n_candidates", "job", "rule", "delta"]


def pct(x: float, digits: int = 2, sign: str = "") -> str:
    """Fraction -> percent text (``0.9123`` -> ``"91.23"``; ``sign="+"``: ``0.012`` -> ``"+1.20"``); NaN -> en dash."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:{sign}.{digits}f}"


pp = partial(pct, sign="+")  # a difference of fractions in percentage points: 0.012 -> "+1.20"
code = "`{}`".format  # a label as Markdown code


def number(x: Any, fmt: str = ".3g") -> str:
    """A number as ``fmt`` writes it, text as it is (a knob value such as ``[1,"output"]``); else an en dash."""
    return x if isinstance(x, str) else DASH if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) \
        else format(x, fmt)


def pvalue(p: float, name: str = "p") -> str:
    """``"p < 0.001"`` below 0.001, else ``"p = 0.0123"`` (3 significant digits), ``"p = n/a"`` when
    undefined; ``name=""`` gives the table cell (``"< 0.001"``, ``"0.0123"``, ``"n/a"``)."""
    text = "= n/a" if p is None or not math.isfinite(p) else "< 0.001" if p < 1e-3 else f"= {p:.3g}"
    return f"{name} {text}" if name else text.removeprefix("= ")


def wilcoxon_text(r: dict[str, Any], name: str = "p") -> str:
    """The Wilcoxon p-value as :func:`pvalue` writes it, or ``n/a (n = 5 cannot reach p < 0.05)`` where the exact
    test cannot reach significance (:func:`~.stats.wilcoxon_min_pairs`)."""
    return f"n/a ({r['wilcoxon_note']})" if r.get("wilcoxon_note") else pvalue(r["wilcoxon_pvalue"], name)


def cell(row: Any) -> str:
    """``mean ± std [CI low, CI high]`` in percent for one summary row."""
    n = 0 if row is None else row["n"]
    return DASH if n == 0 else f"{pct(row['mean'])} (n=1)" if n == 1 else \
        f"{pct(row['mean'])} ± {pct(row['std'])} [{pct(row['ci_low'])}, {pct(row['ci_high'])}]"


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown pipe table of text cells (``|`` escaped); ``align``: ``l``/``r`` per column (default: ``lrr…``)."""
    text = [[str(c).replace("|", "\\|").replace("\n", " ") for c in row] for row in [header, *rows]]
    align = align or "l" + "r" * (len(header) - 1)
    return pd.DataFrame(text[1:], columns=text[0]).to_markdown(
        index=False, disable_numparse=True, colalign=["left" if a == "l" else "right" for a in align])


def stats_cells(analysis: agg.Analysis, v: str, metrics: Sequence[str]) -> list[str]:
    """n seeds (the most of any metric), then ``mean ± std [95% CI]`` (percent) per metric."""
    rows = analysis.summary[analysis.summary["variant"] == v].set_index("metric")
    return [str(max([rows.loc[m, "n"] for m in metrics if m in rows.index], default=0)),
            *[cell(rows.loc[m] if m in rows.index else None) for m in metrics]]


def seed_cells(analysis: agg.Analysis, v: str, columns: Iterable[str]) -> list[str]:
    """``mean ± std [95% CI]`` (percent, clipped) over the seeds of ``v`` of each of ``columns``."""
    return [cell(asdict(t_interval(analysis.seeds.get(c, v).values(), 0.95, (0.0, 1.0)))) for c in columns]


_ENV = jinja2.Environment(loader=jinja2.PackageLoader("seqft_lightning.compare"), trim_blocks=True,
                          lstrip_blocks=True, undefined=jinja2.StrictUndefined, extensions=["jinja2.ext.do"])
_ENV.filters.update(pct=pct, pp=pp, number=number, pvalue=pvalue, wilcoxon=wilcoxon_text, cell=cell, code=code,
                    metric=agg.metric_name, fromjson=json.loads)
_ENV.tests["finite"] = lambda x: isinstance(x, (int, float)) and math.isfinite(x)
_ENV.globals.update(report=sys.modules[__name__], agg=agg, tradeoff_frame=tradeoff_frame, alpha=ALPHA,
                    min_paired=MIN_PAIRED_SEEDS, wilcoxon_min_pairs=wilcoxon_min_pairs,
                    hypothesis="sequential fine-tuning beats joint fine-tuning")


def write_outputs(analysis: agg.Analysis, sweep_dir: Path, out_dir: Path, plots: Sequence[Any]) -> dict[str, Path]:
    """Write every text output atomically; returns ``{name: path}``."""
    out_dir, sweep_dir = Path(out_dir), Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, tuned = agg.summary_csv_frame(analysis), analysis.choices
    tuned = tuned if not tuned.empty else pd.DataFrame(columns=TUNED_COLUMNS)
    figures = [{**vars(p), "src": Path(os.path.relpath(p.path, out_dir)).as_posix()  # links relative to the .md
                if p.path is not None and Path(p.path).is_file() else None} for p in plots]
    context = {"a": analysis, "sweep_dir": sweep_dir, "plots": figures,
               "cost": agg.cost_table(analysis).set_index("variant")}

    def render(name: str) -> str:  # each run of blank lines (left by the template's tags) made one
        return re.sub(r"\n(?:[ \t]*\n)+", "\n\n", _ENV.get_template(name).render(context)).strip() + "\n"
    report = render("report.md.j2")
    embedded = re.sub(r"(!\[[^\]]*\])\(([^)\s]+\.png)\)", lambda m: "{}(data:image/png;base64,{})".format(
        m[1], base64.b64encode((out_dir / m[2]).read_bytes()).decode("ascii")), report)  # the page stands alone
    texts = {"summary.csv": csv.to_csv(index=False, float_format="%.10g"),
             "tuned.csv": tuned.to_csv(index=False, float_format="%.10g"),
             "summary.md": render("summary.md.j2"), "hypothesis.md": render("hypothesis.md.j2"), "report.md": report,
             "report.html": _ENV.get_template("report.html.j2").render(
                 title=f"Sweep comparison: {sweep_dir.name}", body=markdown.markdown(embedded, extensions=["tables"]))}
    return {name: atomic_write_text(out_dir / name, text) for name, text in texts.items()}
