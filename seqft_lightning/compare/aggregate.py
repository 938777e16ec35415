"""Tables built from loaded jobs: the per-job frame, the tuned variants (a knob chosen per seed on
the calibration split), per-variant summaries over seeds, the per-seed baseline, paired
comparisons, costs, and tidy frames that the plots draw.

Accuracies stay fractions in [0, 1] here; presentation (percent) happens in the report.
Per-seed values are the mean over jobs of the same variant and seed (normally one job).
Confidence intervals of bounded metrics are clipped to their range (see :mod:`.stats`).

Nested selection, "choose on calibration, report test": a *tuned* variant
(:func:`tune_curves`) has, for each seed, the job of its knob curve
(:func:`~.variants.knob_curves`) that :func:`seqft_lightning.selection.select` picks from the jobs'
final **calibration** metrics; its test metrics and cost are that job's. Test metrics are never
read by a choice: the candidates handed to ``select`` are built from ``calibration/*`` keys only.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from seqft_lightning.compare.load import Job, is_finite_number
from seqft_lightning.compare.stats import PairedResult, paired_by_seed, t_interval
from seqft_lightning.compare.variants import (FAMILIES, MERGING_METHODS, NAIVE_METHODS, NO_RETENTION, KnobCurve,
                                              format_value, knob_curves, variant_family, variant_labels)
from seqft_lightning.contract import (CL_AVG_ACC, CL_BWT, CL_FORGETTING, GROUP_METRICS, TEST,
                                      class_metric_key, metric_key)
from seqft_lightning.errors import SeqftError
from seqft_lightning.selection import RULES, check_rule, select

log = logging.getLogger(__name__)

BASELINE_METHOD = "baseline"
BASELINE_LABEL = "baseline (pretrained)"
METHOD_ORDER = NAIVE_METHODS + MERGING_METHODS

ACC, TARGET, RETAINED, LOSS = (metric_key(TEST, m) for m in ("acc", "acc_target", "acc_retained", "loss"))
CLASS_MEAN = metric_key(TEST, "acc_task_class_mean")  # compare's own: unweighted mean over task classes
BASE_METRICS = tuple(metric_key(TEST, m) for m in GROUP_METRICS)
CL_METRICS = (CL_AVG_ACC, CL_FORGETTING, CL_BWT)
#: Metrics whose values are not fractions in [0, 1]: their CIs are never clipped.
UNBOUNDED_METRICS = (LOSS, CL_FORGETTING, CL_BWT)
#: Metrics of the hypothesis test (sequential − joint), in report order.
HYPOTHESIS_METRICS = (TARGET, ACC)
#: Metrics of the variant-vs-reference comparisons.
COMPARISON_METRICS = (TARGET, RETAINED, ACC)
#: Metrics of the bar chart.
HEADLINE_METRICS = (ACC, TARGET, RETAINED)

CALIBRATION = "calibration"
CAL_ACC, CAL_TARGET, CAL_RETAINED = (metric_key(CALIBRATION, m) for m in ("acc", "acc_target", "acc_retained"))
CAL_SCORE = metric_key(CALIBRATION, "selection_score")
#: Final calibration metrics of a job (summary.csv): what every choice is made from.
CALIBRATION_METRICS = (CAL_ACC, CAL_TARGET, CAL_RETAINED, CAL_SCORE)
#: The baseline's calibration metrics (summary.csv); ``baseline/calibration/acc_retained`` is the
#: reference of the ``target_at_retained`` rule.
BASELINE_CALIBRATION = tuple(f"baseline/{m}" for m in (CAL_ACC, CAL_TARGET, CAL_RETAINED))
BASE_CAL_RETAINED = f"baseline/{CAL_RETAINED}"
#: The candidate keys :func:`seqft_lightning.selection.select` reads, from the calibration columns.
SELECT_KEYS = {"acc": CAL_ACC, "acc_target": CAL_TARGET, "acc_retained": CAL_RETAINED}

#: Cost keys in report order: ``metrics.json`` ``cost`` (deterministic), then ``run_info.json``.
COST_KEYS = ("cost/optimizer_steps", "cost/train_samples", "cost/train_flops", "cost/eval_flops",
             "cost/total_flops", "cost/extra_memory_bytes", "cost/pretrain_steps")
RUN_INFO_COST_KEYS = ("cost/train_wall_s", "cost/device")
TRAIN_FLOPS, TRAIN_WALL, DEVICE = "cost/train_flops", "cost/train_wall_s", "cost/device"
#: A tuned variant's cost of the whole knob grid of its seed (every grid point trained).
GRID_FLOPS, GRID_WALL = "cost/grid_train_flops", "cost/grid_train_wall_s"
#: Methods whose λ is not chosen by the study's rule (task negation keeps its published rule),
#: left out of the tuned table and of the best-method choice.
OWN_RULE_METHODS = ("task_negation",)
CHOSEN_FOR = "chosen_for"

METRIC_NAMES = {
    "test/acc": "accuracy",
    "test/precision": "precision (macro)",
    "test/recall": "recall (macro)",
    "test/f1": "F1 (macro)",
    "test/loss": "loss",
    "test/acc_target": "target acc (pooled)",
    "test/acc_retained": "retained acc",
    CLASS_MEAN: "target acc (mean of task classes)",
    "cl/avg_acc": "avg acc (CL)",
    "cl/forgetting": "forgetting",
    "cl/bwt": "BWT",
}


def class_metric(k: int) -> str:
    """Metric key of the accuracy on true class ``k``."""
    return class_metric_key(TEST, "acc", k)


def metric_bounds(metric: str) -> tuple[float, float] | None:
    """Range a metric's CI is clipped to: (0, 1) for fractions, None for loss, forgetting, BWT."""
    return None if metric in UNBOUNDED_METRICS else (0.0, 1.0)


def metric_name(metric: str) -> str:
    """Human-readable metric name."""
    if metric.startswith("test/acc_class_"):
        return f"class {metric.rsplit('_', 1)[-1]} acc"
    return METRIC_NAMES.get(metric, metric)


@dataclass(frozen=True)
class SelectionRule:
    """The rule compare applies (:mod:`seqft_lightning.selection`) and where it came from."""

    rule: str
    delta: float
    source: str  # "the jobs' `selection` config", "the command line (...)", "selection.py's defaults (...)"

    def short(self) -> str:
        """``selected on calibration by target_at_retained, δ = 0.01``: for figure titles."""
        delta = "" if self.rule == "overall" else f", δ = {self.delta:g}"
        return f"selected on calibration by {self.rule}{delta}"

    def text(self) -> str:
        """One sentence for every report."""
        if self.rule == "overall":
            what = "the highest overall calibration accuracy"
        else:
            what = (f"the highest calibration target accuracy among settings whose calibration retained accuracy "
                    f"is at least the baseline's minus δ = {100 * self.delta:g} pp; when none qualifies, the best "
                    "retained accuracy (flagged as a fallback)")
        return (f"Selection rule: `{self.rule}`, δ = {self.delta:g} ({what}; ties go to the smaller knob value), "
                f"always on the calibration split, never on test. Rule from {self.source}.")


@dataclass
class Analysis:
    """Everything the report needs, computed once from the loaded jobs.

    ``variants`` are the variants of the job configs; ``tuned`` the tuned variants (one per knob
    curve with a choice); ``shown`` the variants of the headline views: every variant except the
    grid points of a tuned curve, plus the tuned variants. ``rows`` is ``frame`` plus, for each
    tuned variant and seed, the chosen job's row again under the tuned label, so that
    :func:`per_seed` serves tuned and plain variants alike.
    """

    jobs: list[Job]
    labels: dict[str, str]                       # job rel path -> variant label
    frame: pd.DataFrame                          # one row per job (summary.csv)
    task_classes: list[int]
    variants: list[str]                          # ordered, only variants with >= 1 finished job
    variant_method: dict[str, str]               # variants and tuned variants
    variant_retention: dict[str, str]
    baseline: pd.DataFrame                       # index = seed, columns = metric keys
    baseline_label: str
    baseline_source: str
    table_metrics: list[str]
    summary: pd.DataFrame                        # long: variant, metric, n, mean, std, ci_low, ci_high
    selection: SelectionRule = field(default_factory=lambda: SelectionRule("target_at_retained", 0.01, "defaults"))
    curves: list[KnobCurve] = field(default_factory=list)
    tuned: list[str] = field(default_factory=list)   # tuned variant labels, ordered
    choices: pd.DataFrame = field(default_factory=pd.DataFrame)  # tuned.csv: one row per tuned variant and seed
    shown: list[str] = field(default_factory=list)
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    seeds: SeedTable = field(default_factory=lambda: SeedTable(pd.DataFrame()))  # per_seed of rows, indexed
    members: dict[str, list[Job]] = field(default_factory=dict)  # variant -> its jobs (tuned: the chosen ones)
    hypothesis: list[dict[str, Any]] = field(default_factory=list)
    tuned_hypothesis: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None

    @property
    def all_variants(self) -> list[str]:
        """Variants and tuned variants, in report order."""
        return order_variants({v: (self.variant_method[v], self.variant_retention[v]) for v in [*self.variants, *self.tuned]})

    def curve_of(self, tuned: str) -> KnobCurve | None:
        return next((c for c in self.curves if c.label == tuned), None)

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if not j.ok]

    @property
    def finished(self) -> list[Job]:
        return [j for j in self.jobs if j.ok]

    def family(self, variant: str) -> str:
        """``naive``, ``retention`` or ``merging`` (the pretrained baseline row is naive)."""
        if variant not in self.variant_method:
            return FAMILIES[0]
        return variant_family(self.variant_method[variant], self.variant_retention[variant])


# --------------------------------------------------------------------------- per-job frame

def task_classes_of(jobs: Iterable[Job]) -> list[int]:
    """Union of the task classes of all jobs: ``task_classes`` of metrics.json, else (a failed
    job) the classes of the config's ``method.stages`` (unresolved interpolations are ignored)."""
    classes: set[int] = set()
    for job in jobs:
        found = (job.metrics or {}).get("task_classes")
        if not found:
            stages = (job.config.get("method") or {}).get("stages")
            found = [c for stage in stages for c in stage] if isinstance(stages, list) else []
        classes.update(int(c) for c in found if is_finite_number(c))
    return sorted(classes)


def _num(d: Mapping[str, Any] | None, key: str) -> float:
    value = (d or {}).get(key)
    return float(value) if is_finite_number(value) else math.nan


def _metric_row(d: Mapping[str, Any] | None, task_classes: Sequence[int]) -> dict[str, float]:
    row = {m: _num(d, m) for m in BASE_METRICS}
    for k in range(10):
        row[class_metric(k)] = _num(d, class_metric(k))
    task = [row[class_metric(k)] for k in task_classes]
    row[CLASS_MEAN] = float(np.mean(task)) if task and all(math.isfinite(v) for v in task) else math.nan
    return row


def jobs_frame(jobs: Sequence[Job], labels: Mapping[str, str], task_classes: Sequence[int]) -> pd.DataFrame:
    """One row per job: identity, status, and final (``final``) metrics as fractions.

    All ten class accuracies are kept in memory (the heatmap needs them);
    :func:`summary_csv_frame` selects the published columns.
    """
    rows = []
    for job in jobs:
        m = job.metrics or {}
        final = m.get("final") if isinstance(m.get("final"), Mapping) else None
        row: dict[str, Any] = {
            "job": job.rel, "status": job.status, "reason": job.reason, "method": job.method,
            "retention": job.retention, "variant": labels[job.rel],
            "seed": job.seed if job.seed is not None else pd.NA,
            "stages": json.dumps(m.get("stages")) if m.get("stages") is not None else "",
        }
        row.update(_metric_row(final, task_classes))
        for key in CL_METRICS:
            row[key] = _num(final, key)
        row["lambda"] = _num(m, "lambda")
        base = m.get("baseline") if isinstance(m.get("baseline"), Mapping) else None
        for key in (ACC, TARGET, RETAINED):
            row[f"baseline/{key}"] = _num(base, key)
        for key in CALIBRATION_METRICS:
            row[key] = _num(final, key)
        for key in (CAL_ACC, CAL_TARGET, CAL_RETAINED):
            row[f"baseline/{key}"] = _num(base, key)
        row.update(_cost_row(m, job.run_info))
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _cost_row(metrics: Mapping[str, Any], run_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cost/*`` of metrics.json (numbers) and of run_info.json (wall time; the device as text)."""
    row: dict[str, Any] = {k: math.nan for k in (*COST_KEYS, TRAIN_WALL)}
    row[DEVICE] = ""
    cost = metrics.get("cost") if isinstance(metrics.get("cost"), Mapping) else {}
    for key, value in [*cost.items(), *(run_info or {}).items()]:
        if str(key).startswith("cost/"):
            row[key] = value if key == DEVICE or isinstance(value, str) else _num({key: value}, key)
    return row


def cost_columns(frame: pd.DataFrame) -> list[str]:
    """Every ``cost/*`` column of the frame: the contract's in order, then any other, sorted."""
    known = [*COST_KEYS, *RUN_INFO_COST_KEYS]
    return known + sorted(c for c in frame.columns if c.startswith("cost/") and c not in known)


def summary_csv_frame(frame: pd.DataFrame, task_classes: Sequence[int], knob_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Columns of ``summary.csv``: identity, headline metrics, task-class accuracies,
    ``cl/*`` and ``lambda`` only where any job has them, the baseline reference, the final
    calibration metrics and the baseline's, every ``cost/*``, the knob columns of the sweep's knob
    curves (``retention.lambda_``, ...) and ``chosen_for`` (the tuned variants that chose the job)."""
    cols = ["job", "status", "reason", "method", "retention", "variant", "seed", "stages",
            *BASE_METRICS, *[class_metric(k) for k in task_classes], CLASS_MEAN]
    optional = [*CL_METRICS, "lambda"]
    cols += [c for c in optional if c in frame and frame[c].notna().any()]
    cols += [f"baseline/{k}" for k in (ACC, TARGET, RETAINED)]
    cols += [*CALIBRATION_METRICS, *BASELINE_CALIBRATION, *cost_columns(frame), *knob_keys, CHOSEN_FOR]
    return frame[[c for c in cols if c in frame.columns]]


# --------------------------------------------------------------------------- per-seed values

class SeedTable:
    """Per-seed values of every variant of a frame, computed once: ``{variant: frame indexed by seed}``
    of the finished jobs' numeric columns, the mean over jobs of the same variant and seed (NaNs
    skipped). :func:`per_seed` on it equals :func:`per_seed` on the frame, without a scan per call."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._by: dict[str, pd.DataFrame] = {}
        if frame.empty:
            return
        done = frame[(frame["status"] == "ok") & frame["seed"].notna()]
        numeric = [c for c in done.columns if c != "seed" and pd.api.types.is_numeric_dtype(done[c])
                   and not pd.api.types.is_bool_dtype(done[c])]
        for variant, group in done.groupby("variant", sort=False):
            table = group.groupby(group["seed"].astype(int))[numeric].mean()
            self._by[str(variant)] = table

    def get(self, metric: str, variant: str) -> dict[int, float]:
        table = self._by.get(variant)
        if table is None or metric not in table:
            return {}
        return {int(s): float(v) for s, v in table[metric].dropna().items()}


def per_seed(frame: pd.DataFrame | SeedTable, metric: str, variant: str) -> dict[int, float]:
    """``{seed: value}`` of the finished jobs of ``variant`` (mean over duplicate seeds), NaNs dropped."""
    if isinstance(frame, SeedTable):
        return frame.get(metric, variant)
    if frame.empty or metric not in frame:
        return {}
    sel = frame[(frame["status"] == "ok") & frame["seed"].notna() & (frame["variant"] == variant)]
    sel = sel[["seed", metric]].dropna()
    if sel.empty:
        return {}
    grouped = sel.groupby("seed")[metric].mean()
    return {int(s): float(v) for s, v in grouped.items()}


def baseline_per_seed(jobs: Sequence[Job], frame: pd.DataFrame, task_classes: Sequence[int]) -> tuple[pd.DataFrame, str]:
    """Per-seed pretrained-baseline metrics (index seed) and where they came from.

    Jobs of the ``baseline`` method win when present (their ``final`` metrics); otherwise
    the ``baseline`` block of every finished job with the study's task classes is used,
    averaged per seed (they should agree).
    """
    base_jobs = frame[(frame["method"] == BASELINE_METHOD) & (frame["status"] == "ok")] if not frame.empty else frame
    if not frame.empty and len(base_jobs):
        metric_cols = [c for c in frame.columns if c.startswith("test/")]
        rows = base_jobs[["seed", *metric_cols]].dropna(subset=["seed"])
        table = rows.groupby("seed").mean(numeric_only=True)
        table.index = table.index.astype(int)
        return table, "jobs of the baseline method (their final metrics)"
    rows = []
    for job in jobs:
        base = (job.metrics or {}).get("baseline")
        # only jobs whose target classes are the study's (task_negation may target fewer)
        if job.ok and job.seed is not None and isinstance(base, Mapping) \
                and task_classes_of([job]) == list(task_classes):
            rows.append({"seed": job.seed, **_metric_row(base, task_classes)})
    if not rows:
        return pd.DataFrame(), "none"
    df = pd.DataFrame(rows)
    for seed, values in df.groupby("seed"):
        spread = values.drop(columns="seed").max() - values.drop(columns="seed").min()
        if (spread > 1e-9).any():
            log.warning("baseline metrics of seed %s differ between jobs; averaging them", seed)
    table = df.groupby("seed").mean(numeric_only=True)
    table.index = table.index.astype(int)
    return table, "the `baseline` block of each finished job's metrics.json, deduplicated per seed"


# --------------------------------------------------------------------------- summaries

def summarize(values_by_seed: Mapping[int, float], metric: str) -> dict[str, float]:
    """Mean, std (ddof=1) and 95% t-CI (clipped to :func:`metric_bounds`) over seeds of ``{seed: value}``."""
    s = t_interval(list(values_by_seed.values()), 0.95, metric_bounds(metric))
    return {"n": s.n, "mean": s.mean, "std": s.std, "ci_low": s.ci_low, "ci_high": s.ci_high}


def table_metrics_for(frame: pd.DataFrame, task_classes: Sequence[int]) -> list[str]:
    """Metrics of the variant table, in column order (``cl/*`` only when present)."""
    metrics = ["test/acc", "test/precision", "test/recall", "test/f1",
               *[class_metric(k) for k in task_classes], CLASS_MEAN, TARGET, RETAINED]
    metrics += [m for m in ("cl/forgetting", "cl/bwt") if m in frame and frame[m].notna().any()]
    return metrics


def summary_table(frame: pd.DataFrame | SeedTable, variants: Sequence[str], metrics: Sequence[str],
                  baseline: pd.DataFrame | None = None, baseline_label: str = BASELINE_LABEL) -> pd.DataFrame:
    """Long table ``variant, metric, n, mean, std, ci_low, ci_high`` (fractions; CI clipped).

    A ``baseline`` frame (index seed) adds a first row group labelled ``baseline_label``.
    """
    rows = []
    if baseline is not None and not baseline.empty:
        for metric in metrics:
            if metric in baseline:
                values = {int(s): float(v) for s, v in baseline[metric].dropna().items()}
                rows.append({"variant": baseline_label, "metric": metric, **summarize(values, metric)})
    for variant in variants:
        for metric in metrics:
            rows.append({"variant": variant, "metric": metric, **summarize(per_seed(frame, metric, variant), metric)})
    return pd.DataFrame(rows, columns=["variant", "metric", "n", "mean", "std", "ci_low", "ci_high"])


def order_variants(info: Mapping[str, tuple[str, str]]) -> list[str]:
    """Variants ordered by family (naive, retention, merging), method, retention, label."""
    def key(v: str) -> tuple:
        method, retention = info[v]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return (FAMILIES.index(variant_family(method, retention)), rank, method, retention, v)
    return sorted(info, key=key)


# --------------------------------------------------------------------------- paired comparisons

def _result_row(result: PairedResult, **ident: Any) -> dict[str, Any]:
    return {**ident, "n": result.n, "seeds": list(result.seeds), "mean_diff": result.mean_diff,
            "std_diff": result.std_diff, "ci_low": result.ci_low, "ci_high": result.ci_high,
            "t_pvalue": result.t_pvalue, "wilcoxon_pvalue": result.wilcoxon_pvalue,
            "verdict": result.verdict}


def plain_variants(analysis: Analysis, method: str) -> list[str]:
    """Variants of ``method`` without a retention method."""
    return [v for v in analysis.variants
            if analysis.variant_method[v] == method and analysis.variant_retention[v] == NO_RETENTION]


def hypothesis_tests(analysis: Analysis) -> list[dict[str, Any]]:
    """"Sequential beats joint": every plain sequential vs every plain joint variant,
    paired by seed on :data:`HYPOTHESIS_METRICS`; ``diff = sequential − joint``."""
    rows = []
    for seq in plain_variants(analysis, "sequential"):
        for joint in plain_variants(analysis, "joint"):
            for metric in HYPOTHESIS_METRICS:
                a = per_seed(analysis.seeds, metric, seq)
                b = per_seed(analysis.seeds, metric, joint)
                row = _result_row(paired_by_seed(a, b), variant=seq, reference=joint, metric=metric)
                row["per_seed"] = [(s, a[s], b[s]) for s in row["seeds"]]
                rows.append(row)
    return rows


def reference_comparisons(analysis: Analysis) -> list[dict[str, Any]]:
    """Every shown variant (grid points of a tuned curve are represented by the tuned variant) vs
    the pretrained baseline and vs each plain joint variant;
    ``diff = variant − reference`` (positive favours the variant).

    The baseline of a seed is the ``baseline`` block of the variant's own job(s) (the exact
    model it started from); the per-seed baseline table is the fallback.
    """
    rows = []
    joints = plain_variants(analysis, "joint")
    for variant in analysis.shown:
        if analysis.variant_method[variant] == BASELINE_METHOD:
            continue
        for metric in COMPARISON_METRICS:
            a = per_seed(analysis.seeds, metric, variant)
            b = per_seed(analysis.seeds, f"baseline/{metric}", variant)
            if not b and not analysis.baseline.empty and metric in analysis.baseline:
                b = {int(s): float(v) for s, v in analysis.baseline[metric].dropna().items()}
            if b:
                rows.append(_result_row(paired_by_seed(a, b), variant=variant,
                                        reference=analysis.baseline_label, metric=metric))
            for joint in joints:
                if joint == variant:
                    continue
                b = per_seed(analysis.seeds, metric, joint)
                rows.append(_result_row(paired_by_seed(a, b), variant=variant, reference=joint, metric=metric))
    return rows


def _warn_duplicate_seeds(frame: pd.DataFrame) -> None:
    if frame.empty:
        return
    done = frame[(frame["status"] == "ok") & frame["seed"].notna()]
    counts = done.groupby(["variant", "seed"]).size()
    for (variant, seed), n in counts[counts > 1].items():
        log.warning("variant %s has %d finished jobs with seed %s; their metrics are averaged",
                    variant, n, seed)


# --------------------------------------------------------------------------- selection (calibration only)

def selection_rule(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None) -> SelectionRule:
    """The rule compare applies: ``rule``/``delta`` when given (the command line), else the
    ``selection`` config the finished jobs ran with, which must agree (else a one-line
    :class:`SeqftError`), else :mod:`seqft_lightning.selection`'s defaults."""
    found: dict[tuple[str, float], list[str]] = {}
    for job in jobs:
        cfg = job.config.get("selection") if job.ok else None
        if isinstance(cfg, Mapping) and "rule" in cfg:
            key = (str(cfg["rule"]), float(cfg.get("delta", 0.01)))
            found.setdefault(key, []).append(job.rel)
    ran = "; ".join(f"{r}, delta={d:g} ({len(js)} job(s), e.g. {js[0]})" for (r, d), js in sorted(found.items()))
    if rule is not None or delta is not None:
        # what the command line leaves open comes from the jobs where they agree on it, else the defaults
        rules, deltas = {r for r, _ in found}, {d for _, d in found}
        chosen = (rule or (rules.pop() if len(rules) == 1 else "target_at_retained"),
                  float(delta if delta is not None else deltas.pop() if len(deltas) == 1 else 0.01))
        try:
            check_rule(*chosen)
        except ValueError as err:
            raise SeqftError(str(err)) from None
        if len(found) > 1:
            log.warning("the jobs ran with different selection rules (%s); compare applies %s, delta=%g",
                        ran, *chosen)
        jobs_say = f"; the jobs ran with {ran}" if found else ""
        return SelectionRule(chosen[0], chosen[1], f"the command line (--rule/--delta){jobs_say}")
    if len(found) > 1:
        raise SeqftError(f"the jobs of this sweep ran with different selection rules ({ran}): compare them under "
                         f"one rule with --rule {{{','.join(RULES)}}} --delta D, or compare the sweeps apart")
    if found:
        (r, d), = found
        try:
            check_rule(r, d)
        except ValueError as err:
            raise SeqftError(f"{err} (in the jobs' config)") from None
        return SelectionRule(r, d, "the jobs' `selection` config")
    return SelectionRule("target_at_retained", 0.01, "selection.py's defaults (the jobs carry no `selection` config)")


def _candidate(row: Mapping[str, Any]) -> dict[str, float]:
    """What :func:`select` reads of a job: its final calibration metrics, nothing else."""
    return {name: float(row[col]) for name, col in SELECT_KEYS.items()}


def _chosen_value(value: Any) -> Any:
    return value if is_finite_number(value) else format_value(value)


def tune_curves(frame: pd.DataFrame, curves: Sequence[KnobCurve], rule: SelectionRule) -> pd.DataFrame:
    """One row per knob curve and seed: the knob value :func:`select` picks from the seed's grid.

    Candidates are the curve's finished jobs of that seed in knob order (:func:`~.variants.knob_sort_key`),
    each as its final calibration ``acc``, ``acc_target``, ``acc_retained``; the reference of
    ``target_at_retained`` is the seed's ``baseline["calibration/acc_retained"]`` (every job of a seed
    starts from the same pretrained model). A job without calibration metrics is not a candidate.
    The row carries the chosen job's calibration and test metrics and cost, and the whole grid's
    training cost (``cost/grid_train_flops``, ``cost/grid_train_wall_s``).
    """
    done = frame[(frame["status"] == "ok") & frame["seed"].notna()] if not frame.empty else frame
    rows = []
    for curve in curves:
        grid = json.dumps([_chosen_value(v) for v in curve.values])
        sel = done[done["variant"].isin(curve.variants)]
        missing: list[str] = []
        for seed, group in sel.groupby("seed"):
            candidates, values = [], []
            for value, label in curve.points:
                jobs = group[group["variant"] == label]
                if jobs.empty:
                    continue
                if len(jobs) > 1:
                    log.warning("%s, seed %s: %d jobs at %s=%s; the first (%s) is the candidate",
                                curve.label, seed, len(jobs), curve.key, format_value(value), jobs.iloc[0]["job"])
                row = jobs.iloc[0]
                if not all(math.isfinite(row[c]) for c in SELECT_KEYS.values()):
                    missing.append(row["job"])
                    continue
                candidates.append(row)
                values.append(value)
            if not candidates:
                continue
            base = float(candidates[0][BASE_CAL_RETAINED])
            if rule.rule == "target_at_retained" and not math.isfinite(base):
                log.warning("%s, seed %s: no baseline calibration retained accuracy; no choice", curve.label, seed)
                continue
            spread = [float(c[BASE_CAL_RETAINED]) for c in candidates]
            if max(spread) - min(spread) > 1e-9:
                log.warning("%s, seed %s: the jobs' baseline calibration retained accuracies differ (%s); "
                            "the first is the reference", curve.label, seed, ", ".join(f"{v:.4f}" for v in spread))
            chosen = select([_candidate(c) for c in candidates], base, rule.rule, rule.delta)
            job = candidates[chosen.index]
            rows.append({
                "variant": curve.label, "kind": "knob", "knob": curve.key, "grid": grid, "seed": int(seed),
                "chosen": _chosen_value(values[chosen.index]), "fallback": bool(chosen.fallback),
                "n_candidates": len(candidates), "job": job["job"], "rule": rule.rule, "delta": rule.delta,
                BASE_CAL_RETAINED: base,
                **{c: job[c] for c in (CAL_ACC, CAL_TARGET, CAL_RETAINED, ACC, TARGET, RETAINED)},
                **{c: job[c] for c in cost_columns(frame) if c in job.index},
                GRID_FLOPS: float(group[TRAIN_FLOPS].sum(min_count=1)),
                GRID_WALL: float(group[TRAIN_WALL].sum(min_count=1)),
            })
        if missing:
            log.warning("%s: %d job(s) without calibration metrics are no candidates (e.g. %s)", curve.label,
                        len(missing), ", ".join(missing[:3]))
    return pd.DataFrame(rows)


def merging_choices(jobs: Sequence[Job], frame: pd.DataFrame) -> pd.DataFrame:
    """The λ each merging job chose in-run (by the same rule, on calibration), in the rows of
    :func:`tune_curves`; methods with their own rule (task negation) and without λ are left out."""
    by_job = frame.set_index("job") if not frame.empty else frame
    rows = []
    for job in jobs:
        m = job.metrics or {}
        if not job.ok or job.method not in MERGING_METHODS or job.method in OWN_RULE_METHODS \
                or not is_finite_number(m.get("lambda")) or job.seed is None:
            continue
        how = m.get("lambda_selection") if isinstance(m.get("lambda_selection"), Mapping) else {}
        grid = sorted(job.calibration["lambda"].dropna().tolist()) if job.calibration is not None else []
        row = by_job.loc[job.rel]
        rows.append({
            "variant": row["variant"], "kind": "merging (in-run)", "knob": "lambda", "grid": json.dumps(grid),
            "seed": int(job.seed), "chosen": float(m["lambda"]), "fallback": bool(how.get("fallback", False)),
            "n_candidates": len(grid), "job": job.rel, "rule": how.get("rule", ""), "delta": how.get("delta", math.nan),
            BASE_CAL_RETAINED: row[BASE_CAL_RETAINED],
            **{c: row[c] for c in (CAL_ACC, CAL_TARGET, CAL_RETAINED, ACC, TARGET, RETAINED)},
            **{c: row[c] for c in cost_columns(frame) if c in row.index},
        })
    return pd.DataFrame(rows)


def variant_rows(frame: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """``frame`` plus each tuned variant's chosen job rows under the tuned label."""
    knob = choices[choices["kind"] == "knob"] if not choices.empty else choices
    if knob.empty:
        return frame
    by_job = frame.set_index("job")
    extra = by_job.loc[knob["job"].tolist()].reset_index()
    extra["variant"] = knob["variant"].tolist()
    return pd.concat([frame, extra], ignore_index=True)


def add_knob_columns(frame: pd.DataFrame, jobs: Sequence[Job], curves: Sequence[KnobCurve]) -> list[str]:
    """Add one column per knob key of ``curves`` (the job's value where its config has that key);
    returns the keys."""
    from seqft_lightning.contract import flatten

    keys = list(dict.fromkeys(c.key for c in curves))
    if not keys or frame.empty:
        return keys
    flat = {j.rel: flatten(j.config) for j in jobs}
    for key in keys:
        frame[key] = [_chosen_value(flat[rel][key]) if key in flat.get(rel, {}) else None for rel in frame["job"]]
    return keys


# --------------------------------------------------------------------------- the answer

def _mean_over_seeds(rows: pd.DataFrame | SeedTable, metric: str, variant: str) -> float:
    values = list(per_seed(rows, metric, variant).values())
    return float(np.mean(values)) if values else math.nan


def best_method(analysis: Analysis) -> dict[str, Any] | None:
    """The best fine-tuning method under the selection rule: :func:`select` over the shown
    variants' (naive, tuned, merging; not the baseline, not task negation) mean final calibration
    metrics over seeds, with the mean baseline calibration retained accuracy as reference.

    Candidates go in report order. The tuned variants' calibration numbers are those of the settings
    chosen on the same split, so they are optimistic next to untuned ones (a known bias of picking
    twice on one split; the test numbers reported beside them are not).
    """
    names = [v for v in analysis.shown
             if analysis.variant_method[v] not in (BASELINE_METHOD, *OWN_RULE_METHODS)]
    table = []
    for v in names:
        row = {"variant": v, **{k: _mean_over_seeds(analysis.seeds, col, v) for k, col in SELECT_KEYS.items()}}
        if all(math.isfinite(row[k]) for k in SELECT_KEYS):
            table.append(row)
    if not table:
        return None
    rows = analysis.rows
    done = rows[(rows["status"] == "ok") & rows["seed"].notna() & rows["variant"].isin([r["variant"] for r in table])]
    per_seed_base = done.groupby("seed")[BASE_CAL_RETAINED].mean().dropna()
    base = float(per_seed_base.mean()) if len(per_seed_base) else math.nan
    if analysis.selection.rule == "target_at_retained" and not math.isfinite(base):
        return None
    chosen = select(table, base, analysis.selection.rule, analysis.selection.delta)
    floor = base - analysis.selection.delta
    for r in table:
        r["qualifies"] = analysis.selection.rule == "overall" or r["acc_retained"] >= floor - 1e-12
    return {"variant": table[chosen.index]["variant"], "fallback": chosen.fallback, "baseline_retained": base,
            "candidates": table}


def cost_table(analysis: Analysis) -> pd.DataFrame:
    """Per shown variant: n seeds, the mean over seeds of each numeric ``cost/*`` (tuned: of the
    chosen jobs, plus the whole grid's training cost) and the devices the jobs ran on."""
    rows = analysis.rows
    numeric = [c for c in cost_columns(analysis.frame) if c != DEVICE]
    out = []
    for v in analysis.shown:
        sel = rows[(rows["status"] == "ok") & (rows["variant"] == v)]
        entry: dict[str, Any] = {"variant": v, "n": int(sel["seed"].nunique()) if len(sel) else 0}
        for c in numeric:
            entry[c] = _mean_over_seeds(analysis.seeds, c, v)
        devices = sorted({str(d) for d in sel.get(DEVICE, pd.Series(dtype=str)) if isinstance(d, str) and d})
        entry[DEVICE] = ", ".join(devices)
        grid = analysis.choices[analysis.choices["variant"] == v] if not analysis.choices.empty else pd.DataFrame()
        for c in (GRID_FLOPS, GRID_WALL):
            entry[c] = float(grid[c].mean()) if c in grid and grid[c].notna().any() else math.nan
        out.append(entry)
    return pd.DataFrame(out, columns=["variant", "n", *numeric, DEVICE, GRID_FLOPS, GRID_WALL])


def tuned_hypothesis_tests(analysis: Analysis) -> list[dict[str, Any]]:
    """"Sequential beats joint" with both sides tuned: each sequential curve's tuned variant against
    each joint curve's of the same retention method and knob, paired by seed on
    :data:`HYPOTHESIS_METRICS`; ``diff = sequential − joint``."""
    rows = []
    tuned = set(analysis.tuned)
    seqs = [c for c in analysis.curves if c.method == "sequential" and c.label in tuned]
    joints = [c for c in analysis.curves if c.method == "joint" and c.label in tuned]
    for seq in seqs:
        for joint in (j for j in joints if (j.retention, j.key) == (seq.retention, seq.key)):
            for metric in HYPOTHESIS_METRICS:
                a = per_seed(analysis.seeds, metric, seq.label)
                b = per_seed(analysis.seeds, metric, joint.label)
                row = _result_row(paired_by_seed(a, b), variant=seq.label, reference=joint.label, metric=metric,
                                  retention=seq.retention)
                row["per_seed"] = [(s, a[s], b[s]) for s in row["seeds"]]
                rows.append(row)
    return rows


def analyse(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None) -> Analysis:
    """Build the full :class:`Analysis` of a sweep; ``rule``/``delta`` override the jobs' selection rule."""
    jobs = list(jobs)
    labels = dict(zip([j.rel for j in jobs], variant_labels([j.config for j in jobs])))
    classes = task_classes_of(jobs)
    frame = jobs_frame(jobs, labels, classes)
    info = {labels[j.rel]: (j.method, j.retention) for j in jobs if j.ok}
    variants = order_variants(info)
    selection = selection_rule(jobs, rule, delta)
    configs: dict[str, dict[str, Any]] = {}
    for j in jobs:
        if j.ok:
            configs.setdefault(labels[j.rel], j.config)
    curves = knob_curves(configs)
    add_knob_columns(frame, jobs, curves)
    knob = tune_curves(frame, curves, selection)
    choices = pd.concat([knob, merging_choices(jobs, frame)], ignore_index=True)
    tuned_info = {c.label: (c.method, c.retention) for c in curves
                  if not knob.empty and (knob["variant"] == c.label).any()}
    for c in curves:
        if c.label not in tuned_info:
            log.warning("%s: no seed has a choice (no calibration metrics?); its grid points are shown as they are",
                        c.label)
    tuned = order_variants(tuned_info)
    if not frame.empty:
        chosen_by = {} if knob.empty else knob.groupby("job")["variant"].agg(lambda v: "; ".join(sorted(set(v))))
        frame[CHOSEN_FOR] = [chosen_by.get(rel, "") for rel in frame["job"]]
    rows = variant_rows(frame, choices)
    seeds = SeedTable(rows)
    in_tuned_curve = {v for c in curves if c.label in tuned_info for v in c.variants}
    all_info = {**info, **tuned_info}
    shown = order_variants({v: all_info[v] for v in all_info if v not in in_tuned_curve})
    members: dict[str, list[Job]] = {v: [] for v in all_info}
    by_rel = {j.rel: j for j in jobs}
    for j in jobs:
        if j.ok:
            members[labels[j.rel]].append(j)
    if not knob.empty:
        for r in knob.sort_values(["variant", "seed"]).itertuples(index=False):
            members[r.variant].append(by_rel[r.job])

    baseline, source = baseline_per_seed(jobs, frame, classes)
    has_baseline_method = any(info[v][0] == BASELINE_METHOD for v in variants)
    metrics = table_metrics_for(frame, classes)
    summary = summary_table(seeds, order_variants(all_info), metrics,
                            None if has_baseline_method else baseline, BASELINE_LABEL)
    analysis = Analysis(
        jobs=jobs, labels=labels, frame=frame, task_classes=classes, variants=variants,
        variant_method={v: m for v, (m, _) in all_info.items()},
        variant_retention={v: r for v, (_, r) in all_info.items()},
        baseline=baseline,
        baseline_label=BASELINE_LABEL if not has_baseline_method else "baseline",
        baseline_source=source, table_metrics=metrics, summary=summary,
        selection=selection, curves=curves, tuned=tuned, choices=choices, shown=shown, rows=rows, seeds=seeds,
        members=members,
    )
    _warn_duplicate_seeds(frame)
    analysis.hypothesis = hypothesis_tests(analysis)
    analysis.tuned_hypothesis = tuned_hypothesis_tests(analysis)
    analysis.comparisons = reference_comparisons(analysis)
    analysis.best = best_method(analysis)
    return analysis


# --------------------------------------------------------------------------- tidy frames for plots

def _is_class_list(label: object) -> bool:
    """``"3"``, ``"3+4+7"``: a stage trained on these classes (vs ``"merged"``, ``"pretrain"``)."""
    return all(part.strip().isdigit() for part in str(label).split("+"))


def _sequence_stages(stages: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stage table that form a training sequence.

    When the last stage combines models trained separately from the baseline (its
    ``trained_classes`` is not a class list, e.g. ``merged``), the stages in between are those
    separate models, not steps of a sequence: only stage 0 and the last stage are kept.
    """
    if "trained_classes" not in stages:
        return stages
    numeric = pd.to_numeric(stages["stage"], errors="coerce")
    last = numeric.max()
    last_label = stages.loc[numeric == last, "trained_classes"].iloc[0]
    if last > 0 and not _is_class_list(last_label):
        return stages[(numeric == 0) | (numeric == last)]
    return stages


def shown_jobs(analysis: Analysis) -> list[tuple[str, Job]]:
    """``(variant, job)`` of every shown variant (a tuned variant: its chosen jobs)."""
    return [(v, job) for v in analysis.shown for job in analysis.members.get(v, [])]


def stage_trend_frame(analysis: Analysis) -> pd.DataFrame:
    """Long ``variant, seed, stage, evaluated, acc`` from the stage tables of the shown variants' jobs."""
    parts = []
    for variant, job in shown_jobs(analysis):
        if job.stages is None or job.stages.empty:
            continue
        df = _sequence_stages(job.stages)[["stage", "evaluated", "acc"]].copy()
        df["variant"] = variant
        df["seed"] = job.seed
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["variant", "seed", "stage", "evaluated", "acc"])
    out = pd.concat(parts, ignore_index=True)
    out["stage"] = pd.to_numeric(out["stage"], errors="coerce")
    out["acc"] = pd.to_numeric(out["acc"], errors="coerce")
    out["evaluated"] = out["evaluated"].astype(str)
    return out.dropna(subset=["stage", "acc"])


def class_accuracy_matrix(analysis: Analysis) -> pd.DataFrame:
    """Final accuracy per true class (columns 0..9), mean over seeds; rows = shown variants
    (the pretrained baseline first when known). Fractions."""
    rows = {}
    classes = [class_metric(k) for k in range(10)]
    if not analysis.baseline.empty and analysis.baseline_label == BASELINE_LABEL:
        rows[analysis.baseline_label] = [analysis.baseline[c].mean() if c in analysis.baseline else np.nan
                                         for c in classes]
    for variant in analysis.shown:
        rows[variant] = [np.mean(list(per_seed(analysis.seeds, c, variant).values()) or [np.nan])
                         for c in classes]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(range(10)))


def confusion_by_variant(analysis: Analysis) -> dict[str, tuple[np.ndarray, int, list]]:
    """Final confusion matrix per shown variant, summed over seeds: ``{variant: (counts, n_jobs, stages)}``."""
    out: dict[str, tuple[np.ndarray, int, list]] = {}
    for variant, job in shown_jobs(analysis):
        if job.confusion is None:
            continue
        if variant in out:
            total, n, stages = out[variant]
            if total.shape != job.confusion.shape:
                log.warning("confusion matrix of %s has shape %s; skipped", job.rel, job.confusion.shape)
                continue
            out[variant] = (total + job.confusion, n + 1, stages + [job.confusion_stage])
        else:
            out[variant] = (job.confusion.copy(), 1, [job.confusion_stage])
    return {v: out[v] for v in analysis.shown if v in out}


def curves_frame(analysis: Analysis, split: str = "train", metric: str = "loss",
                 min_stage: int = 1) -> pd.DataFrame:
    """Long ``variant, seed, stage, step, value`` of one curve of the shown variants (fine-tuning
    stages only by default)."""
    parts = []
    for variant, job in shown_jobs(analysis):
        c = job.curves
        if c is None or c.empty:
            continue
        sel = c[(c["split"].astype(str) == split) & (c["metric"].astype(str) == metric)]
        sel = sel[pd.to_numeric(sel["stage"], errors="coerce") >= min_stage]
        if sel.empty:
            continue
        df = sel[["stage", "epoch", "step", "value"]].apply(pd.to_numeric, errors="coerce")
        df["variant"] = variant
        df["seed"] = job.seed
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=["variant", "seed", "stage", "epoch", "step", "value"])
    return pd.concat(parts, ignore_index=True).dropna(subset=["step", "value"])


def calibration_frame(analysis: Analysis) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Long calibration sweep ``variant, seed, lambda, acc, acc_target, acc_retained`` and
    the λ each job selected (``{variant: [lambda, ...]}``)."""
    parts, chosen = [], {}
    for job in analysis.finished:
        if job.calibration is None or job.calibration.empty:
            continue
        variant = analysis.labels[job.rel]
        df = job.calibration[["lambda", "acc", "acc_target", "acc_retained"]].apply(pd.to_numeric, errors="coerce")
        df["variant"] = variant
        df["seed"] = job.seed
        parts.append(df)
        lam = (job.metrics or {}).get("lambda")
        if is_finite_number(lam):
            chosen.setdefault(variant, []).append(float(lam))
    if not parts:
        return pd.DataFrame(columns=["variant", "seed", "lambda", "acc", "acc_target", "acc_retained"]), {}
    return pd.concat(parts, ignore_index=True).dropna(subset=["lambda"]), chosen


# --------------------------------------------------------------------------- the trade-off (test)

TRADEOFF_COLUMNS = ["kind", "series", "variant", "method", "retention", "knob", "value", "n",
                    "x", "x_lo", "x_hi", "y", "y_lo", "y_hi", "selected"]


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point dominates (higher is better in both; NaNs never on it).

    A point is dominated when another is at least as good in both coordinates and better in one.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        better = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        mask[i] = not better.any()
    return mask


def _xy_row(rows: pd.DataFrame | SeedTable, variant: str, **ident: Any) -> dict[str, Any]:
    """Mean and clipped 95% t-interval over seeds of test retained (x) and target (y) accuracy."""
    xs = t_interval(per_seed(rows, RETAINED, variant).values(), 0.95, (0.0, 1.0))
    ys = t_interval(per_seed(rows, TARGET, variant).values(), 0.95, (0.0, 1.0))
    return {**ident, "variant": variant, "n": min(xs.n, ys.n), "x": xs.mean, "x_lo": xs.ci_low, "x_hi": xs.ci_high,
            "y": ys.mean, "y_lo": ys.ci_low, "y_hi": ys.ci_high}


def tradeoff_frame(analysis: Analysis) -> pd.DataFrame:
    """Test target (y) vs retained (x) accuracy of everything on the trade-off plot, means over seeds.

    ``kind``: ``curve`` (a knob curve's grid points, ``series`` = its tuned label, ``value`` = the
    knob value), ``lambda`` (a merging method's λ grid from ``lambda_test.csv``), ``point`` (every
    shown variant: naive, tuned, merging, untuned retention; and the pretrained baseline). ``selected``:
    a tuned variant, or a merging variant whose λ was chosen on calibration. ``pareto`` marks the
    points on the Pareto front of all of them.
    """
    out = []
    rows = analysis.seeds
    for curve in analysis.curves:
        for value, label in curve.points:
            out.append(_xy_row(rows, label, kind="curve", series=curve.label, method=curve.method,
                               retention=curve.retention, knob=curve.key, value=format_value(value), selected=False))
    parts = []
    for job in analysis.finished:
        if job.lambda_test is None or job.lambda_test.empty or job.method in OWN_RULE_METHODS:
            continue
        df = job.lambda_test[["lambda", "acc_target", "acc_retained"]].apply(pd.to_numeric, errors="coerce")
        parts.append(df.assign(variant=analysis.labels[job.rel], method=job.method))
    if parts:
        lam = pd.concat(parts, ignore_index=True).dropna()
        for (variant, method, value), g in lam.groupby(["variant", "method", "lambda"], sort=True):
            xs = t_interval(g["acc_retained"], 0.95, (0.0, 1.0))
            ys = t_interval(g["acc_target"], 0.95, (0.0, 1.0))
            out.append({"kind": "lambda", "series": variant, "variant": variant, "method": method,
                        "retention": NO_RETENTION, "knob": "lambda", "value": format_value(float(value)),
                        "n": min(xs.n, ys.n), "x": xs.mean, "x_lo": xs.ci_low, "x_hi": xs.ci_high,
                        "y": ys.mean, "y_lo": ys.ci_low, "y_hi": ys.ci_high, "selected": False})
    lambda_variants = {r["variant"] for r in out if r["kind"] == "lambda"}
    if analysis.baseline_label == BASELINE_LABEL and not analysis.baseline.empty:
        b = analysis.baseline
        xs = t_interval(b[RETAINED].dropna() if RETAINED in b else [], 0.95, (0.0, 1.0))
        ys = t_interval(b[TARGET].dropna() if TARGET in b else [], 0.95, (0.0, 1.0))
        out.append({"kind": "point", "series": BASELINE_LABEL, "variant": BASELINE_LABEL, "method": BASELINE_METHOD,
                    "retention": NO_RETENTION, "knob": "", "value": "", "n": min(xs.n, ys.n), "x": xs.mean,
                    "x_lo": xs.ci_low, "x_hi": xs.ci_high, "y": ys.mean, "y_lo": ys.ci_low, "y_hi": ys.ci_high,
                    "selected": False})
    for v in analysis.shown:
        if analysis.variant_method[v] in OWN_RULE_METHODS:
            continue  # its target is the classes it forgets: another question, not on these axes
        selected = v in analysis.tuned or v in lambda_variants
        out.append(_xy_row(rows, v, kind="point", series=v, method=analysis.variant_method[v],
                           retention=analysis.variant_retention[v], knob="", value="", selected=selected))
    frame = pd.DataFrame(out, columns=TRADEOFF_COLUMNS)
    frame["pareto"] = pareto_front(frame["x"], frame["y"]) if len(frame) else []
    return frame
