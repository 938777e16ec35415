"""Write the comparison outputs of a sweep into ``<sweep_dir>/compare/``:
``summary.csv``, ``summary.md``, ``hypothesis.md``, ``report.md`` and ``report.html``.

Tables show accuracies in percent (``91.23``) and differences in percentage points
(``+1.20 pp``); ``summary.csv`` keeps the raw fractions. Every paired difference is
``variant − reference`` (for the hypothesis: sequential − joint), so a positive value
favours the first-named side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare.document import (Block, Bullets, Heading, Image, Paragraph, Table,
                                              to_html, to_markdown)
from seqft_lightning.compare.stats import MIN_PAIRED_SEEDS
from seqft_lightning.io import atomic_write_text

HYPOTHESIS = "Sequential fine-tuning beats joint fine-tuning"
#: The report's one statement of the clipping rule of :mod:`.stats` (tables and plots alike).
CLIPPING = ("CIs of accuracies, precision, recall and F1 are clipped to [0, 100] % for display, in these "
            "tables and in the plots alike; CIs of loss, forgetting, BWT and of paired differences are not.")
DASH = "–"


# --------------------------------------------------------------------------- number formatting

def pct(x: float, digits: int = 2) -> str:
    """Fraction -> percent text (``0.9123`` -> ``"91.23"``); NaN -> en dash."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def pp(x: float, digits: int = 2) -> str:
    """Signed difference of fractions in percentage points (``0.012`` -> ``"+1.20"``)."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def pvalue(p: float, name: str = "p") -> str:
    """``"p < 0.001"`` below 0.001, else ``"p = 0.0123"`` (3 significant digits), ``"p = n/a"`` when
    undefined; ``name=""`` gives the table cell (``"< 0.001"``, ``"0.0123"``, ``"n/a"``)."""
    text = "= n/a" if p is None or not math.isfinite(p) else "< 0.001" if p < 1e-3 else f"= {p:.3g}"
    return f"{name} {text}" if name else text.removeprefix("= ")


def cell(row: Any) -> str:
    """``mean ± std [CI low, CI high]`` in percent for one summary row."""
    if row is None or row["n"] == 0:
        return DASH
    if row["n"] == 1:
        return f"{pct(row['mean'])} (n=1)"
    return f"{pct(row['mean'])} ± {pct(row['std'])} [{pct(row['ci_low'])}, {pct(row['ci_high'])}]"


def code(label: str) -> str:
    return f"`{label}`"


# --------------------------------------------------------------------------- tables

def _summary_lookup(analysis: agg.Analysis) -> dict[tuple[str, str], Any]:
    return {(r.variant, r.metric): r._asdict() for r in analysis.summary.itertuples(index=False)} \
        if not analysis.summary.empty else {}


def _table_variants(analysis: agg.Analysis) -> list[str]:
    synthetic = analysis.baseline_label == agg.BASELINE_LABEL and not analysis.baseline.empty
    return ([agg.BASELINE_LABEL] if synthetic else []) + list(analysis.variants)


def variant_table(analysis: agg.Analysis, metrics: Sequence[str], caption: str) -> Table:
    """One row per variant: n seeds and ``mean ± std [95% CI]`` (percent) per metric."""
    lookup = _summary_lookup(analysis)
    header = ["variant", "n seeds", *[agg.metric_name(m) for m in metrics]]
    rows = []
    for v in _table_variants(analysis):
        ns = [lookup[(v, m)]["n"] for m in metrics if (v, m) in lookup]
        rows.append([code(v), str(max(ns) if ns else 0), *[cell(lookup.get((v, m))) for m in metrics]])
    return Table(header, rows, caption)


def summary_blocks(analysis: agg.Analysis) -> list[Block]:
    """Per-variant summary over seeds (content of ``summary.md``)."""
    classes = ", ".join(map(str, analysis.task_classes)) or "none found"
    headline = [m for m in analysis.table_metrics
                if not m.startswith("test/acc_class_") and m != agg.CLASS_MEAN]
    per_class = [m for m in analysis.table_metrics if m.startswith("test/acc_class_")] + [agg.CLASS_MEAN]
    n_failed = len(analysis.failed)
    return [
        Heading("Summary over seeds", 2),
        Paragraph(f"Cells are test metrics in percent: **mean ± std [95% CI]** over seeds (std with ddof=1, "
                  f"CI from the t-distribution with n−1 degrees of freedom; none for n=1). {CLIPPING} "
                  f"Task classes: {classes}. "
                  "Target acc (pooled) = accuracy over all test samples of the task classes; "
                  "target acc (mean of task classes) = unweighted mean of the per-class accuracies; retained = "
                  "accuracy on all other classes. Forgetting is positive when accuracy was lost; BWT is negative "
                  "when accuracy was lost (both in percentage points)."),
        Paragraph(f"Baseline row: {analysis.baseline_source}. "
                  f"{len(analysis.finished)} finished job(s), {n_failed} failed or unfinished (not included)."),
        variant_table(analysis, headline, "**Headline metrics** (%)"),
        variant_table(analysis, per_class, "**Accuracy on the task classes** (%)"),
    ]


def _comparison_table(rows: Sequence[dict[str, Any]], first: str, second: str, hypothesis: str) -> Table:
    header = [first, second, "metric", "n", "mean diff (pp)", "95% CI (pp)", "paired t p", "Wilcoxon p",
              f"verdict ({hypothesis})"]
    body = [[code(r["variant"]), code(r["reference"]), agg.metric_name(r["metric"]), str(r["n"]),
             pp(r["mean_diff"]), f"[{pp(r['ci_low'])}, {pp(r['ci_high'])}]",
             pvalue(r["t_pvalue"], ""), pvalue(r["wilcoxon_pvalue"], ""), f"**{r['verdict']}**"] for r in rows]
    return Table(header, body, align=["l", "l", "l"] + ["r"] * 5 + ["l"])


def verdict_lines(analysis: agg.Analysis) -> list[str]:
    """One line per (sequential variant, joint variant, metric): the verdict first."""
    if not analysis.hypothesis:
        seq = agg.plain_variants(analysis, "sequential")
        joint = agg.plain_variants(analysis, "joint")
        missing = [name for name, found in (("sequential", seq), ("joint", joint)) if not found]
        return [f"**inconclusive** — no finished {' or '.join(missing)} job without retention in this sweep, "
                "so no paired comparison is possible."]
    several = len({(r["variant"], r["reference"]) for r in analysis.hypothesis}) > 1
    lines = []
    for r in analysis.hypothesis:
        who = f"{code(r['variant'])} vs {code(r['reference'])}, " if several else ""
        if r["n"] == 0:
            detail = "no seed has both a finished sequential and a finished joint job"
        else:
            detail = (f"sequential − joint = {pp(r['mean_diff'])} pp, 95% CI [{pp(r['ci_low'])}, {pp(r['ci_high'])}] pp, "
                      f"n = {r['n']} paired seed(s), paired t {pvalue(r['t_pvalue'])}, "
                      f"Wilcoxon {pvalue(r['wilcoxon_pvalue'])}")
            if r["n"] < MIN_PAIRED_SEEDS:
                detail += f" (fewer than {MIN_PAIRED_SEEDS} paired seeds)"
        lines.append(f"{who}{agg.metric_name(r['metric'])}: **{r['verdict']}** — {detail}")
    return lines


def _per_seed_table(analysis: agg.Analysis) -> Table:
    header = ["sequential", "joint", "metric", "seed", "sequential (%)", "joint (%)", "diff (pp)"]
    body = []
    for r in analysis.hypothesis:
        for seed, a, b in r["per_seed"]:
            body.append([code(r["variant"]), code(r["reference"]), agg.metric_name(r["metric"]), str(seed),
                         pct(a), pct(b), pp(a - b)])
    return Table(header, body, align=["l", "l", "l", "r", "r", "r", "r"])


def hypothesis_blocks(analysis: agg.Analysis, level: int = 1, with_verdict: bool = True) -> list[Block]:
    """The paired test of the study's hypothesis and the reference comparisons (``hypothesis.md``).

    ``with_verdict=False`` leaves out the title and verdict (the report shows them first).
    """
    blocks: list[Block] = [
        Heading(f"Hypothesis: {HYPOTHESIS.lower()}", level),
        Paragraph("**Verdict**"),
        Bullets(verdict_lines(analysis)),
    ] if with_verdict else [Heading("Hypothesis test and comparisons", level)]
    blocks += [
        Paragraph(
            "Jobs are paired by seed: the plain sequential variant (retention none) against the plain joint "
            "variant with the same seed. The difference is **sequential − joint**, so a "
            "positive value favours sequential. The 95% CI of the mean difference uses the t-distribution "
            "(n−1 degrees of freedom); p-values are two-sided (paired t-test, Wilcoxon signed-rank; with n ≤ 5 "
            "the Wilcoxon test cannot reach p < 0.05). Verdict rule: **supported** when the whole CI is above 0, "
            "**not supported** when it is entirely below 0 (joint is better), otherwise **inconclusive** — "
            f"always inconclusive with fewer than {MIN_PAIRED_SEEDS} paired seeds. Target accuracy is pooled "
            "over the test samples of the task classes."),
    ]
    if analysis.hypothesis:
        blocks += [Heading("Paired results", level + 1),
                   _comparison_table(analysis.hypothesis, "sequential", "joint", "H: sequential > joint"),
                   Heading("Per-seed values", level + 1), _per_seed_table(analysis)]
    base_rows = [r for r in analysis.comparisons if r["reference"] == analysis.baseline_label]
    joint_rows = [r for r in analysis.comparisons if r["reference"] != analysis.baseline_label]
    note = ("Exploratory: many comparisons, no multiple-testing correction. Difference = variant − reference "
            "(positive favours the variant); verdict as above for H: variant > reference.")
    blocks.append(Heading("Every variant vs the pretrained baseline", level + 1))
    if base_rows:
        blocks += [Paragraph(note + " The baseline of each seed is the `baseline` block of the variant's own "
                             "job (the model it started from), else the per-seed baseline of the summary table."),
                   _comparison_table(base_rows, "variant", "reference", "H: variant > baseline")]
    else:
        blocks.append(Paragraph("No baseline metrics found."))
    blocks.append(Heading("Every variant vs joint", level + 1))
    if joint_rows:
        blocks += [Paragraph(note), _comparison_table(joint_rows, "variant", "reference", "H: variant > joint")]
    else:
        blocks.append(Paragraph("No finished plain joint variant to compare against."))
    return blocks


def jobs_blocks(analysis: agg.Analysis) -> list[Block]:
    """Which jobs were read; failed and unfinished jobs with their reason."""
    counts: dict[str, int] = {}
    for j in analysis.finished:
        v = analysis.labels[j.rel]
        counts[v] = counts.get(v, 0) + 1
    blocks: list[Block] = [
        Heading("Jobs", 2),
        Paragraph(f"{len(analysis.jobs)} job dir(s) read: {len(analysis.finished)} finished, "
                  f"{len(analysis.failed)} failed or unfinished."),
    ]
    if analysis.failed:
        blocks.append(Paragraph("**Failed or unfinished jobs** (excluded from every statistic):"))
        blocks.append(Table(["job dir", "status", "variant", "seed", "reason"],
                            [[code(j.rel), j.status, code(analysis.labels[j.rel]),
                              DASH if j.seed is None else str(j.seed), j.reason] for j in analysis.failed],
                            align=["l"] * 5))
    else:
        blocks.append(Paragraph("No failed or unfinished jobs."))
    inactive = sorted({(analysis.labels[j.rel], str(j.metrics.get("retention_inactive")))
                       for j in analysis.finished if (j.metrics or {}).get("retention_inactive")})
    if inactive:
        blocks.append(Paragraph("**Retention that could not act** (these variants equal their plain "
                                "counterpart, by construction):"))
        blocks.append(Table(["variant", "why"], [[code(v), why] for v, why in inactive], align=["l", "l"]))
    if counts:
        blocks.append(Table(["variant", "finished jobs", "seeds"],
                            [[code(v), str(counts.get(v, 0)), ", ".join(
                                str(s) for s in sorted({j.seed for j in analysis.finished
                                                        if analysis.labels[j.rel] == v and j.seed is not None}))]
                             for v in analysis.variants],
                            caption="**Finished jobs per variant**", align=["l", "r", "l"]))
    return blocks


def plot_blocks(plots: Sequence[Any]) -> list[Block]:
    """Figures in order; skipped figures become a one-line note."""
    blocks: list[Block] = [Heading("Plots", 2)]
    for p in plots:
        if p.path is not None and Path(p.path).is_file():
            blocks += [Heading(p.title, 3), Image(Path(p.path), p.caption)]
        else:
            blocks += [Heading(p.title, 3), Paragraph(f"Skipped: {p.note or 'nothing to plot'}.")]
    return blocks


def report_blocks(analysis: agg.Analysis, sweep_dir: Path, plots: Sequence[Any]) -> list[Block]:
    """Full report, readable top to bottom: verdict, jobs, tables, comparisons, plots."""
    return [
        Heading(f"Sweep comparison: {sweep_dir.name}", 1),
        Paragraph(f"Sweep folder: `{sweep_dir}`. Hypothesis under test: **{HYPOTHESIS.lower()}**."),
        Heading("Verdict", 2),
        Bullets(verdict_lines(analysis)),
        *jobs_blocks(analysis),
        *summary_blocks(analysis),
        *hypothesis_blocks(analysis, level=2, with_verdict=False),
        *plot_blocks(plots),
    ]


# --------------------------------------------------------------------------- writing

def write_outputs(analysis: agg.Analysis, sweep_dir: Path, out_dir: Path, plots: Sequence[Any]) -> dict[str, Path]:
    """Write every text output atomically; returns ``{name: path}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    csv = agg.summary_csv_frame(analysis.frame, analysis.task_classes)
    paths["summary.csv"] = atomic_write_text(out_dir / "summary.csv", csv.to_csv(index=False, float_format="%.10g"))

    summary_doc = [Heading(f"Summary: {sweep_dir.name}", 1), *summary_blocks(analysis)[1:]]
    paths["summary.md"] = atomic_write_text(out_dir / "summary.md", to_markdown(summary_doc, out_dir))
    paths["hypothesis.md"] = atomic_write_text(out_dir / "hypothesis.md",
                                               to_markdown(hypothesis_blocks(analysis), out_dir))
    blocks = report_blocks(analysis, Path(sweep_dir), plots)
    paths["report.md"] = atomic_write_text(out_dir / "report.md", to_markdown(blocks, out_dir))
    paths["report.html"] = atomic_write_text(out_dir / "report.html",
                                             to_html(blocks, f"Sweep comparison: {Path(sweep_dir).name}"))
    return paths
