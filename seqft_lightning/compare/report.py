"""Write the comparison outputs of a sweep (CSV, markdown, self-contained HTML) into ``<sweep_dir>/compare/``.

Tables show accuracies in percent (``91.23``) and differences in percentage points (``+1.20 pp``); ``summary.csv``
keeps the raw fractions. Every paired difference is ``variant − reference`` (for the hypothesis: sequential −
joint), so a positive value favours the first-named side. Every text output states the selection rule and δ.
Each verdict shows the raw paired-t p, its Holm-adjusted p and the family it was corrected in; a Wilcoxon p-value
is shown only where the exact test can reach p < 0.05 (else ``n/a (n = 5 cannot reach p < 0.05)``; no CSV
carries Wilcoxon p-values).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare.document import (Block, Bullets, Heading, Image, Paragraph, Table,
                                              to_html, to_markdown)
from seqft_lightning.compare.stats import ALPHA, MIN_PAIRED_SEEDS, t_interval, wilcoxon_min_pairs
from seqft_lightning.io import atomic_write_text

HYPOTHESIS = "Sequential fine-tuning beats joint fine-tuning"
#: The report's one statement of the clipping rule of :mod:`.stats` (tables and plots alike).
CLIPPING = ("CIs of accuracies, precision, recall and F1 are clipped to [0, 100] % for display, in these "
            "tables and in the plots alike; CIs of loss, forgetting, BWT and of paired differences are not.")
DASH = "–"
#: Columns of an empty ``tuned.csv`` (a sweep without knob curves or merging λ).
TUNED_COLUMNS = ["variant", "kind", "knob", "grid", "seed", "chosen", "fallback", "on_edge", "edge", "limit_point",
                 "n_candidates", "job", "rule", "delta"]


def pct(x: float, digits: int = 2) -> str:
    """Fraction -> percent text (``0.9123`` -> ``"91.23"``); NaN -> en dash."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:.{digits}f}"


def pp(x: float, digits: int = 2) -> str:
    """Signed difference of fractions in percentage points (``0.012`` -> ``"+1.20"``)."""
    return DASH if x is None or not math.isfinite(x) else f"{100 * x:+.{digits}f}"


def _number(x: Any, fmt: str = ".3g") -> str:
    return DASH if x is None or not isinstance(x, (int, float)) or not math.isfinite(x) else format(x, fmt)


def pvalue(p: float, name: str = "p") -> str:
    """``"p < 0.001"`` below 0.001, else ``"p = 0.0123"`` (3 significant digits), ``"p = n/a"`` when
    undefined; ``name=""`` gives the table cell (``"< 0.001"``, ``"0.0123"``, ``"n/a"``)."""
    text = "= n/a" if p is None or not math.isfinite(p) else "< 0.001" if p < 1e-3 else f"= {p:.3g}"
    return f"{name} {text}" if name else text.removeprefix("= ")


def wilcoxon_text(r: dict[str, Any], name: str = "p") -> str:
    """The Wilcoxon p-value as :func:`pvalue` writes it, or ``n/a (n = 5 cannot reach p < 0.05)`` where the exact
    test cannot reach significance (:func:`~.stats.wilcoxon_min_pairs`)."""
    return f"n/a ({r['wilcoxon_note']})" if r.get("wilcoxon_note") else pvalue(r["wilcoxon_pvalue"], name)


def family_text(rows: Sequence[dict[str, Any]]) -> str:
    """``Holm's step-down correction over one family: every sequential-vs-joint test in this report (m = 6)``
    (``""`` without rows)."""
    if not rows:
        return ""
    first = rows[0]
    return f"Holm's step-down correction over one family: {first['family']} in this report (m = {first['family_size']})"


def cell(row: Any) -> str:
    """``mean ± std [CI low, CI high]`` in percent for one summary row."""
    if row is None or row["n"] == 0:
        return DASH
    if row["n"] == 1:
        return f"{pct(row['mean'])} (n=1)"
    return f"{pct(row['mean'])} ± {pct(row['std'])} [{pct(row['ci_low'])}, {pct(row['ci_high'])}]"


def code(label: str) -> str:
    return f"`{label}`"


def _summary_lookup(analysis: agg.Analysis) -> dict[tuple[str, str], Any]:
    return {(r.variant, r.metric): r._asdict() for r in analysis.summary.itertuples(index=False)}


def _stats_cells(lookup: dict[tuple[str, str], Any], v: str, metrics: Sequence[str]) -> list[str]:
    """n seeds (the most of any metric), then ``mean ± std [95% CI]`` per metric."""
    ns = [lookup[(v, m)]["n"] for m in metrics if (v, m) in lookup]
    return [str(max(ns) if ns else 0), *[cell(lookup.get((v, m))) for m in metrics]]


def _with_baseline(analysis: agg.Analysis, variants: Sequence[str]) -> list[str]:
    """``variants``, after the synthetic pretrained-baseline row when the sweep has one."""
    synthetic = analysis.baseline_label == agg.BASELINE_LABEL and not analysis.baseline.empty
    return ([agg.BASELINE_LABEL] if synthetic else []) + list(variants)


def variant_table(analysis: agg.Analysis, metrics: Sequence[str], caption: str) -> Table:
    """One row per variant: n seeds and ``mean ± std [95% CI]`` (percent) per metric."""
    lookup, variants = _summary_lookup(analysis), _with_baseline(analysis, analysis.all_variants)
    return Table(["variant", "n seeds", *[agg.metric_name(m) for m in metrics]],
                 [[code(v), *_stats_cells(lookup, v, metrics)] for v in variants], caption)


def summary_blocks(analysis: agg.Analysis) -> list[Block]:
    """Per-variant summary over seeds (content of ``summary.md``)."""
    per_class = [m for m in analysis.table_metrics if m.startswith("test/acc_class_")]
    headline = [m for m in analysis.table_metrics if m not in per_class and m != agg.CLASS_MEAN]
    return [
        Heading("Summary over seeds", 2),
        Paragraph(f"Cells are test metrics in percent: **mean ± std [95% CI]** over seeds (std with ddof=1, "
                  f"CI from the t-distribution with n−1 degrees of freedom; none for n=1). {CLIPPING} "
                  f"Task classes: {', '.join(map(str, analysis.task_classes)) or 'none found'}. "
                  "Target acc (pooled) = accuracy over all test samples of the task classes; "
                  "target acc (mean of task classes) = unweighted mean of the per-class accuracies; retained = "
                  "accuracy on all other classes. Forgetting is positive when accuracy was lost; BWT is negative "
                  "when accuracy was lost (both in percentage points)."),
        Paragraph(f"Baseline row: {analysis.baseline_source}. {len(analysis.finished)} finished job(s), "
                  f"{len(analysis.failed)} failed or unfinished (not included)"
                  + (f", {len(analysis.excluded)} diverged (not included)." if analysis.excluded else ".")),
        Paragraph(analysis.selection.text() + (
            " A `(tuned)` row holds, per seed, the grid point chosen by this rule; the grid points themselves "
            "follow it." if analysis.tuned else "")),
        variant_table(analysis, headline, "**Headline metrics** (%)"),
        variant_table(analysis, per_class + [agg.CLASS_MEAN], "**Accuracy on the task classes** (%)"),
    ]


def _comparison_table(rows: Sequence[dict[str, Any]], first: str = "sequential", second: str = "joint",
                      hypothesis: str = "H: sequential > joint") -> Table:
    header = [first, second, "metric", "n", "mean diff (pp)", "95% CI (pp)", "paired t p", "Holm p", "Wilcoxon p",
              f"verdict ({hypothesis})"]
    body = [[code(r["variant"]), code(r["reference"]), agg.metric_name(r["metric"]), str(r["n"]),
             pp(r["mean_diff"]), f"[{pp(r['ci_low'])}, {pp(r['ci_high'])}]", pvalue(r["t_pvalue"], ""),
             pvalue(r["holm_pvalue"], ""), wilcoxon_text(r, ""), f"**{r['verdict']}**"] for r in rows]
    return Table(header, body, align=["l", "l", "l"] + ["r"] * 6 + ["l"])


def _verdict_line(r: dict[str, Any], who: str) -> str:
    if r["n"] == 0:
        detail = "no seed has both a finished sequential and a finished joint job"
    else:
        detail = (f"sequential − joint = {pp(r['mean_diff'])} pp, 95% CI [{pp(r['ci_low'])}, {pp(r['ci_high'])}] pp, "
                  f"n = {r['n']} paired seed(s), paired t {pvalue(r['t_pvalue'])}, Holm {pvalue(r['holm_pvalue'])} "
                  f"(family of {r['family_size']}), Wilcoxon {wilcoxon_text(r)}")
        if r["n"] < MIN_PAIRED_SEEDS:
            detail += f" (fewer than {MIN_PAIRED_SEEDS} paired seeds)"
    return f"{who}{agg.metric_name(r['metric'])}: **{r['verdict']}** — {detail}"


def verdict_lines(analysis: agg.Analysis) -> list[str]:
    """One line per (sequential variant, joint variant, metric): the verdict first."""
    if not analysis.hypothesis:
        missing = [m for m in ("sequential", "joint") if not agg.plain_variants(analysis, m)]
        return [f"**inconclusive** — no finished {' or '.join(missing)} job without retention in this sweep, "
                "so no paired comparison is possible."]
    several = len({(r["variant"], r["reference"]) for r in analysis.hypothesis}) > 1
    return [_verdict_line(r, f"{code(r['variant'])} vs {code(r['reference'])}, " if several else "")
            for r in analysis.hypothesis]


def tuned_verdict_lines(analysis: agg.Analysis) -> list[str]:
    """One line per (sequential+X (tuned), joint+X (tuned), metric); a note when no pair exists."""
    if not analysis.tuned_hypothesis:
        return ["no retention method has a tuned sequential and a tuned joint variant in this sweep"]
    return [_verdict_line(r, f"{code(r['variant'])} vs {code(r['reference'])}, ") for r in analysis.tuned_hypothesis]


def _per_seed_table(rows: Sequence[dict[str, Any]]) -> Table:
    return Table(["sequential", "joint", "metric", "seed", "sequential (%)", "joint (%)", "diff (pp)"],
                 [[code(r["variant"]), code(r["reference"]), agg.metric_name(r["metric"]), str(seed), pct(a), pct(b),
                   pp(a - b)] for r in rows for seed, a, b in r["per_seed"]], align=["l", "l", "l", "r", "r", "r", "r"])


def hypothesis_blocks(analysis: agg.Analysis, level: int = 1, with_verdict: bool = True) -> list[Block]:
    """The paired test of the study's hypothesis and the reference comparisons (``hypothesis.md``).
    ``with_verdict=False`` leaves out the title and verdict (the report shows them first)."""
    blocks: list[Block] = [
        Heading(f"Hypothesis: {HYPOTHESIS.lower()}", level), Paragraph("**Verdict**"), Bullets(verdict_lines(analysis)),
        Paragraph("**Verdict with both sides tuned**"), Bullets(tuned_verdict_lines(analysis)),
    ] if with_verdict else [Heading("Hypothesis test and comparisons", level)]
    family = [*analysis.hypothesis, *analysis.tuned_hypothesis]
    blocks.append(Paragraph(
        "Jobs are paired by seed: the plain sequential variant (retention none) against the plain joint "
        "variant with the same seed. The difference is **sequential − joint**, so a "
        "positive value favours sequential. The 95% CI of the mean difference uses the t-distribution "
        "(n−1 degrees of freedom); p-values are two-sided (paired t-test, exact Wilcoxon signed-rank). "
        f"The Wilcoxon test over n non-zero differences cannot go below p = 2/2^n, so it is shown only from "
        f"n = {wilcoxon_min_pairs()} (n/a below). "
        + (f"{family_text(family)}: the naive pair(s) and every tuned pair, on both metrics; each test's paired-t p "
           "is adjusted (Holm p). " if family else "")
        + f"Verdict rule: **supported** when the whole CI is above 0 and the Holm-adjusted p < {ALPHA:g}, "
        f"**not supported** when the whole CI is below 0 (joint is better) and the Holm-adjusted p < {ALPHA:g}, "
        f"otherwise **inconclusive** — always inconclusive with fewer than {MIN_PAIRED_SEEDS} paired seeds. Target "
        "accuracy is pooled over the test samples of the task classes."))
    if analysis.hypothesis:
        blocks += [Heading("Paired results", level + 1),
                   _comparison_table(analysis.hypothesis),
                   Heading("Per-seed values", level + 1), _per_seed_table(analysis.hypothesis)]
    blocks += [Heading("With both sides tuned, per retention method", level + 1),
               Paragraph("Each retention method's sequential tuned variant against its joint tuned variant (the knob "
                         "chosen per seed on the calibration split, test numbers of the chosen jobs), paired by seed; "
                         "same difference, CI and verdict rule as above. " + analysis.selection.text())]
    if analysis.tuned_hypothesis:
        blocks += [Bullets(tuned_verdict_lines(analysis)),
                   _comparison_table(analysis.tuned_hypothesis, "sequential (tuned)", "joint (tuned)"),
                   _per_seed_table(analysis.tuned_hypothesis)]
    else:
        blocks.append(Paragraph(tuned_verdict_lines(analysis)[0] + "."))
    if analysis.tuned:
        blocks.append(Paragraph("The comparisons below cover the naive, tuned and merging variants; the grid points "
                                "of a tuned knob are in the summary table."))
    note = (f"{family_text(analysis.comparisons)}, both tables together, apart from the sequential-vs-joint family. "
            "Difference = variant − reference (positive favours the variant); verdict as above (CI and Holm p) for "
            "H: variant > reference.")
    base = [r for r in analysis.comparisons if r["reference"] == analysis.baseline_label]
    joint = [r for r in analysis.comparisons if r["reference"] != analysis.baseline_label]
    for vs, ref, rows, extra, missing in (
            ("the pretrained baseline", "baseline", base, " The baseline of each seed is the `baseline` block of the "
             "variant's own job (the model it started from), else the per-seed baseline of the summary table.",
             "No baseline metrics found."),
            ("joint", "joint", joint, "", "No finished plain joint variant to compare against.")):
        blocks.append(Heading(f"Every variant vs {vs}", level + 1))
        blocks += ([Paragraph(note + extra), _comparison_table(rows, "variant", "reference", f"H: variant > {ref}")]
                   if rows else [Paragraph(missing)])
    return blocks


def _grid_text(grid: str) -> str:
    try:
        values = json.loads(grid)
    except (TypeError, ValueError):
        return str(grid)
    return ", ".join(_number(v, "g") if isinstance(v, (int, float)) else str(v) for v in values)


def _value_text(value: Any) -> str:
    """A chosen knob value as the tables write it (numbers ``%g``, lists as their text)."""
    return value if isinstance(value, str) else _number(value, "g")


def _choices_text(choices: pd.DataFrame, what: Callable[[Any], str]) -> str:
    """Rows of tuned.csv as one text, a variant's seeds together: ``<variant> (<knob>): s1: 10000 (high), s2: ...;
    ...``, where ``what(row)`` is the text after each value."""
    parts = [f"{code(v)} ({g['knob'].iloc[0]}): " + ", ".join(
        f"s{int(r.seed)}: {_value_text(r.chosen)} {what(r)}" for r in g.sort_values("seed").itertuples(index=False))
        for v, g in choices.groupby("variant", sort=False)]
    return "; ".join(parts)


def edge_blocks(analysis: agg.Analysis) -> list[Block]:
    """The choices at a grid edge (tuned.csv ``on_edge``): flagged when the edge is no limit point (the rule's best
    setting may lie beyond the grid, so the tuned numbers may be censored), named with why when it is one."""
    ch = analysis.choices
    if ch.empty:
        return []
    edge = ch[ch["on_edge"].astype(bool)]
    censored, limits = edge[edge["limit_point"] == ""], edge[edge["limit_point"] != ""]
    blocks = [Paragraph("**Choices on a grid edge** (the smallest or largest value of that seed's grid, not a limit "
                        "point: the best setting may lie beyond the grid, so widen it): "
                        + (_choices_text(censored, lambda r: f"({r.edge})") if len(censored) else "none") + ".")]
    if len(limits):
        named = [f"{code(v)} at {g['knob'].iloc[0]} = {_value_text(value)} on seed(s) "
                 f"{', '.join(str(int(s)) for s in sorted(rows['seed']))} ({rows['limit_point'].iloc[0]})"
                 for v, g in limits.groupby("variant", sort=False) for value, rows in g.groupby("chosen", sort=False)]
        blocks.append(Paragraph("**Limit points** (an edge that ends the knob's range by construction, not a "
                                "censored search): " + "; ".join(named) + "."))
    return blocks


def tuned_table(analysis: agg.Analysis) -> Table:
    """The shown variants (naive and untuned references, tuned, merging): knob and grid, the value
    chosen per seed, test overall/target/retained ``mean ± std [95% CI]`` and training cost."""
    lookup = _summary_lookup(analysis)
    cost = agg.cost_table(analysis).set_index("variant")
    rows = []
    for v in _with_baseline(analysis, analysis.shown):
        ch = analysis.choices[analysis.choices["variant"] == v] if not analysis.choices.empty else []
        knob, grid, chosen = DASH, DASH, DASH
        if len(ch):
            knob = ch["knob"].iloc[0] if ch["kind"].iloc[0] == "knob" else "λ (chosen in-run)"
            grid = _grid_text(ch["grid"].iloc[0])
            chosen = ", ".join(  # s0: 100, s1: 1e+04* (* = fallback: no setting kept retained accuracy within δ)
                f"s{int(r.seed)}: {_value_text(r.chosen)}{'*' if r.fallback else ''}"
                f"{' (= baseline)' if r.knob == 'lambda' and r.chosen == 0 else ''}"  # a merge at λ = 0 is θ₀ itself
                for r in ch.sort_values("seed").itertuples(index=False))
        flops, wall = (cost[c].get(v) if v in cost.index else None for c in (agg.TRAIN_FLOPS, agg.TRAIN_WALL))
        rows.append([code(v), knob, grid, chosen, *_stats_cells(lookup, v, agg.HEADLINE_METRICS), _number(flops),
                     _number(wall, ".1f")])
    return Table(["variant", "knob", "grid", "chosen per seed (* = fallback; λ = 0: the merge is the baseline)", "n", "test overall (%)",
                  "test target (%)", "test retained (%)", "train FLOPs", "train wall (s)"], rows,
                 "**Tuned variants and their references** (test, %)", align=["l", "l", "l", "l"] + ["r"] * 6)


def cost_blocks(analysis: agg.Analysis) -> list[Block]:
    """The cost table of the shown variants (means over seeds; tuned: the chosen jobs, and the grid)."""
    cost = agg.cost_table(analysis)
    if cost.empty:
        return [Paragraph("No finished job, so no cost.")]
    header = ["variant", "n", "optimizer steps", "train samples", "train FLOPs", "eval FLOPs", "extra memory (MiB)",
              "train wall (s)", "device", "whole grid: train FLOPs", "whole grid: wall (s)"]
    body = [[code(r["variant"]), str(r["n"]), _number(r["cost/optimizer_steps"], ".6g"),
             _number(r["cost/train_samples"], ".6g"), _number(r[agg.TRAIN_FLOPS]), _number(r["cost/eval_flops"]),
             _number(r["cost/extra_memory_bytes"] / 2 ** 20, ".2f"), _number(r[agg.TRAIN_WALL], ".2f"),
             r[agg.DEVICE] or DASH, _number(r[agg.GRID_FLOPS]), _number(r[agg.GRID_WALL], ".1f")]
            for _, r in cost.iterrows()]
    return [
        Paragraph("Means over seeds of each job's `cost/*` (metrics.json: counted FLOPs and samples of fine-tuning, "
                  "pretraining excluded; run_info.json: wall time and device, which vary from run to run). FLOPs are "
                  "matmul FLOPs (a multiply-add is 2). Eval FLOPs are the calibration forwards (curves, λ search). "
                  "Extra memory is what the method keeps besides the model (teacher, Fisher, anchor, replay buffer, "
                  "task vectors). A tuned variant's cost is its chosen job's; *whole grid* is what tuning it cost "
                  "(every grid point of a seed trained), the honest price of the choice."),
        Table(header, body, "**Cost per variant**", align=["l"] + ["r"] * 7 + ["l", "r", "r"]),
    ]


def _seed_cell(analysis: agg.Analysis, column: str, variant: str) -> str:
    """``mean ± std [95% CI]`` (percent, clipped) over seeds of ``column`` of ``variant``."""
    return cell(asdict(t_interval(analysis.seeds.get(column, variant).values(), 0.95, (0.0, 1.0))))


def estimate_table(analysis: agg.Analysis) -> Table:
    """The best method's numbers on the selection part (biased: chosen on them), the estimation part (the reported
    estimate), their difference (estimation − selection, pp; negative = the choice's optimism) and test."""
    best, v = analysis.best, analysis.best["variant"]
    keys = list(agg.SELECT_KEYS)
    test = dict(zip(keys, agg.HEADLINE_METRICS))
    return Table(["numbers of the best method", "overall (%)", "target (%)", "retained (%)"], [
        ["selection part (`calibration/*`): chosen on it, biased",
         *[_seed_cell(analysis, agg.SELECT_KEYS[k], v) for k in keys]],
        ["**estimation part** (`estimation/*`): no choice reads it, **the estimate**",
         *[_seed_cell(analysis, agg.ESTIMATE_KEYS[k], v) for k in keys]],
        ["estimation − selection (pp; negative: optimism of the choice)", *[pp(best["optimism"][k]) for k in keys]],
        ["test: reporting only", *[_seed_cell(analysis, test[k], v) for k in keys]],
    ], "**The best method: estimate and optimism** (mean ± std [95% CI] over seeds)", align=["l", "r", "r", "r"])


def best_blocks(analysis: agg.Analysis) -> list[Block]:
    """The best method under the selection rule: its unbiased estimate (estimation part) beside its test numbers and
    cost, the optimism of its selection-part numbers, how it was chosen, and the candidates it was chosen from."""
    best = analysis.best
    if best is None:
        return [Paragraph("**Best method**: none can be named: no naive, tuned or merging variant has calibration "
                          "metrics (and, for `target_at_retained`, a baseline calibration retained accuracy).")]
    v, lookup = best["variant"], _summary_lookup(analysis)
    cost = agg.cost_table(analysis).set_index("variant")
    c = cost.loc[v] if v in cost.index else None
    numbers = "; ".join(f"{agg.metric_name(m)} {cell(lookup.get((v, m)))}" for m in agg.HEADLINE_METRICS)
    spend = DASH if c is None else (
        f"train FLOPs {_number(c[agg.TRAIN_FLOPS])}, train wall {_number(c[agg.TRAIN_WALL], '.2f')} s "
        f"({c[agg.DEVICE] or 'device unknown'})"
        + (f"; tuning its knob (whole grid) cost {_number(c[agg.GRID_FLOPS])} FLOPs"
           if math.isfinite(c[agg.GRID_FLOPS]) else ""))
    how = ("highest mean calibration overall accuracy" if analysis.selection.rule == "overall" else
           f"highest mean calibration target accuracy among variants whose mean calibration retained accuracy is at "
           f"least {pct(best['baseline_retained'])} % − {100 * analysis.selection.delta:g} pp (the mean baseline's)")
    fallback = (" **No variant kept retained accuracy within δ: the best retained one was taken (fallback).**"
                if best["fallback"] else "")
    rows = [[code(r["variant"]), pct(r["acc"]), pct(r["acc_target"]), pct(r["acc_retained"]),
             "yes" if r["qualifies"] else "no", "**chosen**" if r["variant"] == v else ""] for r in best["candidates"]]
    estimate = ("; ".join(f"{agg.metric_name(m)} {pct(best['estimate'][k])}" for k, m in
                          zip(agg.SELECT_KEYS, agg.HEADLINE_METRICS)) + f" (mean over {best['n_estimate']} seed(s))"
                if best["n_estimate"] else "none: these runs have no estimation-part metrics (older than the split "
                "of the calibration data); its test numbers are the unbiased ones")
    is_baseline = v == best["candidates"][0]["variant"]
    name = (f"do not fine-tune ({code(v)})** — no method raised calibration target accuracy while keeping "
            "calibration retained accuracy within δ of the baseline's;" if is_baseline else f"{code(v)}** —")
    return [
        Paragraph(f"**Best method under the selection rule: {name} estimate on the estimation part (%): "
                  f"{estimate}. Test (%, mean ± std [95% CI] over seeds): {numbers}. Cost: {spend}.{fallback}"),
        Paragraph(f"How it was chosen: by `selection.select` ({how}) over the pretrained baseline (\"do not "
                  "fine-tune\", listed first, so a method must beat it) and the naive, tuned and merging variants' mean "
                  "final metrics on the **selection part** of the calibration split (`calibration/*`), where every "
                  "knob and merging λ was chosen too. Picked on those numbers (a tuned variant twice: its knob, then "
                  "the best method), its selection-part numbers are optimistic; its reported estimate is from the "
                  "disjoint **estimation part** (`estimation/*`), which no choice reads. Test numbers are for "
                  "reporting only and never enter a choice."),
        estimate_table(analysis),
        Table(["variant", "calibration overall (%)", "calibration target (%)", "calibration retained (%)",
               "retained within δ", ""], rows,
              "**Candidates of the best-method choice** (selection part of calibration, mean over seeds)",
              align=["l", "r", "r", "r", "l", "l"]),
    ]


def _pareto_text(analysis: agg.Analysis) -> str:
    """The points on the trade-off plot's Pareto front, best target first, a curve's grid points together."""
    data = agg.tradeoff_frame(analysis)
    if data.empty or not data["pareto"].any():
        return ""
    items: dict[str, list[Any]] = {}  # one entry per series: its grid points and its tuned point together
    for r in data[data["pareto"]].sort_values(["y", "x"], ascending=[False, True]).itertuples(index=False):
        items.setdefault(r.series, []).append(r)
    text = []
    for series, rs in items.items():
        grid, point = [r for r in rs if r.kind != "point"], [r for r in rs if r.kind == "point"]
        where = f" at {grid[0].knob} ∈ {{{', '.join(r.value for r in grid)}}}" if grid else ""
        chosen = " (its tuned choice among them)" if grid and point else ""
        ys, xs = [r.y for r in rs], [r.x for r in rs]
        span = (f"{pct(max(ys), 1)} / {pct(min(xs), 1)}" if len(rs) == 1 else
                f"{pct(min(ys), 1)}–{pct(max(ys), 1)} / {pct(min(xs), 1)}–{pct(max(xs), 1)}")
        text.append(f"{code(series)}{where}{chosen} ({span})")
    return "On the Pareto front of the test means (target / retained %): " + "; ".join(text) + "."


def _plots_in(plots: Sequence[Any], section: str, level: int) -> list[Block]:
    """The figures of ``section`` in order, each under a heading; a skipped figure becomes a one-line note."""
    blocks: list[Block] = []
    for p in plots:
        if p.section == section:
            blocks.append(Heading(p.title, level))
            blocks.append(Image(Path(p.path), p.caption) if p.path is not None and Path(p.path).is_file()
                          else Paragraph(f"Skipped: {p.note or 'nothing to plot'}."))
    return blocks


def _loss_text(loss: Any) -> str:
    """A diverged run's train loss: ``nan`` and ``inf`` as such (they are the finding), en dash when unknown."""
    return f"{loss:.4g}" if isinstance(loss, (int, float)) and not isinstance(loss, bool) else DASH


def _diverged_text(analysis: agg.Analysis) -> str:
    """``2 run(s) excluded as diverged`` (or ``included``), ``""`` when none diverged."""
    n = len(analysis.diverged)
    return "" if not n else f"{n} run(s) {'included' if analysis.include_diverged else 'excluded'} as diverged"


def answer_blocks(analysis: agg.Analysis, plots: Sequence[Any]) -> list[Block]:
    pareto = _pareto_text(analysis)
    reset = any("method.reset_optimizer=false" in v for v in analysis.shown)
    diverged = _diverged_text(analysis)
    return [
        Heading("Answer", 2), Paragraph(analysis.selection.text()),
        *([Paragraph(f"**{diverged}** (listed under Jobs).")] if diverged else []), *best_blocks(analysis),
        *_plots_in(plots, "answer", 3), *([Paragraph(pareto)] if pareto else []),
        Heading("Tuned variants", 3),
        Paragraph("Nested selection: for each retention method's knob curve and each seed, the grid point picked "
                  "by the selection rule from the jobs' final calibration metrics; the tuned variant reports "
                  "that job's test metrics and cost. Merging methods chose λ in-run by the rule their jobs ran "
                  "with (`lambda_selection` in metrics.json). Rows without a knob are the untuned references"
                  + (" (the optimizer-state row: `method.reset_optimizer=false`, Adam's moments kept across "
                     "stages)." if reset else ".")),
        tuned_table(analysis), *edge_blocks(analysis),
        Heading("Verdict: sequential vs joint", 3),
        Paragraph(f"Hypothesis: **{HYPOTHESIS.lower()}**. Naive pair:"), Bullets(verdict_lines(analysis)),
        Paragraph("Each retention method with both sides tuned:"), Bullets(tuned_verdict_lines(analysis)),
        Heading("Cost", 3), *cost_blocks(analysis), *_plots_in(plots, "cost", 4),
    ]


def jobs_blocks(analysis: agg.Analysis) -> list[Block]:
    counts = Counter(analysis.labels[j.rel] for j in analysis.finished)
    diverged = _diverged_text(analysis)
    blocks: list[Block] = [
        Heading("Jobs", 2),
        Paragraph(f"{len(analysis.jobs)} job dir(s) read: {len(analysis.jobs) - len(analysis.failed)} finished"
                  + (f" ({diverged})" if diverged else "") + f", {len(analysis.failed)} failed or unfinished."),
    ]
    if analysis.failed:
        blocks += [Paragraph("**Failed or unfinished jobs** (excluded from every statistic):"),
                   Table(["job dir", "status", "variant", "seed", "reason"],
                         [[code(j.rel), j.status, code(analysis.labels[j.rel]), DASH if j.seed is None else str(j.seed),
                           j.reason] for j in analysis.failed], align=["l"] * 5)]
    else:
        blocks.append(Paragraph("No failed or unfinished jobs."))
    if diverged:
        why = ("let into every statistic by `--include-diverged`" if analysis.include_diverged else
               "left out of every mean, CI, choice and verdict; `--include-diverged` lets them in")
        rows = [[code(j.rel), code(analysis.labels[j.rel]), DASH if j.seed is None else str(j.seed),
                 *(_number(d.get(k), "g") for k in ("stage", "epoch")), _loss_text(d.get("train_loss")),
                 str(d.get("reason") or DASH)]
                for j in analysis.diverged for d in [j.divergence]]
        blocks += [Paragraph(f"**{diverged}** ({why}; they keep their row in summary.csv, `diverged` True):"),
                   Table(["job dir", "variant", "seed", "stage", "epoch", "train loss", "reason"], rows,
                         align=["l", "l", "r", "r", "r", "r", "l"])]
    inactive = sorted({(analysis.labels[j.rel], str(j.metrics.get("retention_inactive")))
                       for j in analysis.finished if (j.metrics or {}).get("retention_inactive")})
    if inactive:
        blocks += [Paragraph("**Retention that could not act** (these variants equal their plain "
                             "counterpart, by construction):"),
                   Table(["variant", "why"], [[code(v), why] for v, why in inactive], align=["l", "l"])]
    if counts:
        seeds = {v: sorted({j.seed for j in analysis.finished if analysis.labels[j.rel] == v and j.seed is not None})
                 for v in analysis.variants}
        blocks.append(Table(["variant", "finished jobs", "seeds"],
                            [[code(v), str(counts[v]), ", ".join(map(str, seeds[v]))] for v in analysis.variants],
                            caption="**Finished jobs per variant**", align=["l", "r", "l"]))
    return blocks


def report_blocks(analysis: agg.Analysis, sweep_dir: Path, plots: Sequence[Any]) -> list[Block]:
    """Full report: the answer first, then jobs, tables, comparisons, plots."""
    return [
        Heading(f"Sweep comparison: {sweep_dir.name}", 1),
        Paragraph(f"Sweep folder: `{sweep_dir}`. Hypothesis under test: **{HYPOTHESIS.lower()}**."),
        *answer_blocks(analysis, plots),
        *jobs_blocks(analysis),
        *summary_blocks(analysis),
        *hypothesis_blocks(analysis, level=2, with_verdict=False),
        Heading("Plots", 2), *_plots_in(plots, "plots", 3),
    ]


def write_outputs(analysis: agg.Analysis, sweep_dir: Path, out_dir: Path, plots: Sequence[Any]) -> dict[str, Path]:
    """Write every text output atomically; returns ``{name: path}``."""
    out_dir, sweep_dir = Path(out_dir), Path(sweep_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    knob_keys = list(dict.fromkeys(c.key for c in analysis.curves))
    csv = agg.summary_csv_frame(analysis.frame, analysis.task_classes, knob_keys)
    tuned = analysis.choices if not analysis.choices.empty else pd.DataFrame(columns=TUNED_COLUMNS)
    summary = [Heading(f"Summary: {sweep_dir.name}", 1), *summary_blocks(analysis)[1:]]
    blocks = report_blocks(analysis, sweep_dir, plots)
    texts = {"summary.csv": csv.to_csv(index=False, float_format="%.10g"),
             "tuned.csv": tuned.to_csv(index=False, float_format="%.10g"),
             "summary.md": to_markdown(summary, out_dir),
             "hypothesis.md": to_markdown(hypothesis_blocks(analysis), out_dir),
             "report.md": to_markdown(blocks, out_dir),
             "report.html": to_html(blocks, f"Sweep comparison: {sweep_dir.name}")}
    return {name: atomic_write_text(out_dir / name, text) for name, text in texts.items()}
