"""Tables built from loaded jobs: the per-job frame, the tuned variants (a knob chosen per seed on the
calibration split), summaries over seeds, the per-seed baseline, paired comparisons, costs, and plot frames.

Accuracies stay fractions in [0, 1] here (percent is the report's business). Per-seed values are the mean
over jobs of the same variant and seed; CIs of bounded metrics are clipped to their range (see :mod:`.stats`).

Nested selection, "choose on calibration, report test": a *tuned* variant (:func:`tune_curves`) has, for each
seed, the job of its knob curve (:func:`~.variants.knob_curves`) that :func:`seqft_lightning.selection.select`
picks from the jobs' final **calibration** metrics; its test metrics and cost are that job's. Test metrics are
never read by a choice: the candidates handed to ``select`` are built from ``calibration/*`` keys only.

The held-out calibration data has two disjoint parts. ``calibration/*`` is the *selection part*: every choice
(a knob per seed, a merging λ in-run, the best method) is made on it. ``estimation/*`` is the *estimation part*:
no choice reads it, so the chosen variant's mean estimation metrics estimate its accuracy without the optimism of
having been picked on the same numbers (:func:`best_method`). Runs older than the split have no ``estimation/*``
keys (NaN here).

Jobs whose metrics.json records a divergence are left out of every mean, CI, choice and verdict (they keep their
row in ``summary.csv``, ``diverged`` True) unless :func:`analyse` is told ``include_diverged``. The verdicts of a
family of paired tests are corrected with Holm's step-down method (:func:`with_holm`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from seqft_lightning.compare.load import Job, divergence_text, is_finite_number
from seqft_lightning.compare.stats import holm, paired_by_seed, t_interval, verdict
from seqft_lightning.compare.variants import (FAMILIES, MERGING_METHODS, NAIVE_METHODS, NO_RETENTION, KnobCurve,
                                              format_value, knob_curves, variant_family, variant_labels)
from seqft_lightning.contract import (CL_AVG_ACC, CL_BWT, CL_FORGETTING, ESTIMATION_PART, GROUP_METRICS, SELECTION_PART,
                                      TEST, class_metric_key, flatten, metric_key)
from seqft_lightning.errors import SeqftError
from seqft_lightning.selection import RULES, check_rule, config_defaults, select

log = logging.getLogger(__name__)

BASELINE_METHOD = "baseline"
BASELINE_LABEL = "baseline (pretrained)"
METHOD_ORDER = NAIVE_METHODS + MERGING_METHODS

ACC, TARGET, RETAINED, LOSS = (metric_key(TEST, m) for m in ("acc", "acc_target", "acc_retained", "loss"))
CLASS_MEAN = metric_key(TEST, "acc_task_class_mean")  # compare's own: unweighted mean over task classes
BASE_METRICS = tuple(metric_key(TEST, m) for m in GROUP_METRICS)
CL_METRICS = (CL_AVG_ACC, CL_FORGETTING, CL_BWT)
#: Metrics whose values are not fractions in [0, 1]: their CIs are never clipped (all others' are, to [0, 1]).
UNBOUNDED_METRICS = (LOSS, CL_FORGETTING, CL_BWT)
#: Metrics of the hypothesis test (sequential − joint), in report order.
HYPOTHESIS_METRICS = (TARGET, ACC)
#: Metrics of the variant-vs-reference comparisons.
COMPARISON_METRICS = (TARGET, RETAINED, ACC)
#: Metrics of the bar chart.
HEADLINE_METRICS = (ACC, TARGET, RETAINED)

#: Metric prefixes of the two disjoint parts of the calibration data: the selection part (every choice) and the
#: estimation part (no choice; an unbiased estimate of what was chosen).
CAL_ACC, CAL_TARGET, CAL_RETAINED, CAL_SCORE = (
    metric_key(SELECTION_PART, m) for m in ("acc", "acc_target", "acc_retained", "selection_score"))
#: The candidate keys :func:`seqft_lightning.selection.select` reads, from the calibration columns.
SELECT_KEYS = {"acc": CAL_ACC, "acc_target": CAL_TARGET, "acc_retained": CAL_RETAINED}
#: Final calibration metrics of a job (summary.csv): what every choice is made from.
CALIBRATION_METRICS = (CAL_ACC, CAL_TARGET, CAL_RETAINED, CAL_SCORE)
#: The same metrics on the estimation part, under the names of :data:`SELECT_KEYS` (never read by a choice).
ESTIMATE_KEYS = {k: metric_key(ESTIMATION_PART, k) for k in SELECT_KEYS}
ESTIMATION_METRICS = tuple(ESTIMATE_KEYS.values())
#: The reference of the ``target_at_retained`` rule (the baseline's calibration retained accuracy).
BASE_CAL_RETAINED = f"baseline/{CAL_RETAINED}"

#: Cost keys in report order: ``metrics.json`` ``cost`` (deterministic), then ``run_info.json``.
COST_KEYS = ("cost/optimizer_steps", "cost/train_samples", "cost/train_flops", "cost/eval_flops",
             "cost/total_flops", "cost/extra_memory_bytes", "cost/pretrain_steps")
TRAIN_FLOPS, TRAIN_WALL, DEVICE = "cost/train_flops", "cost/train_wall_s", "cost/device"
#: A tuned variant's cost of the whole knob grid of its seed (every grid point trained).
GRID_FLOPS, GRID_WALL = "cost/grid_train_flops", "cost/grid_train_wall_s"
#: Methods whose λ is not chosen by the study's rule (task negation keeps its published rule),
#: left out of the tuned table and of the best-method choice.
OWN_RULE_METHODS = ("task_negation",)
CHOSEN_FOR = "chosen_for"
#: summary.csv: whether the job's metrics.json records a divergence (:attr:`~.load.Job.divergence`).
DIVERGED = "diverged"
#: Families of Holm's correction (:func:`with_holm`): every "sequential beats joint" test the report shows (the
#: naive pairs and every tuned pair, both metrics), and the comparisons of each variant with a reference.
HYPOTHESIS_FAMILY = "every sequential-vs-joint test"
REFERENCE_FAMILY = "every variant-vs-reference comparison"

#: Knob values that end a knob's range by construction, ``(knob, value, why)``: a choice there is at a grid edge
#: that no wider grid could move, so it is named rather than flagged as censored (:func:`grid_edge`).
LIMIT_POINTS = (
    ("lambda", 0.0, "λ = 0 is the pretrained baseline itself"),
    ("retention.trainable", ["output"], "only the output layer trains: the smallest trainable set; training less is "
                                        "the baseline"),
)

METRIC_NAMES = {
    "test/acc": "accuracy", "test/precision": "precision (macro)", "test/recall": "recall (macro)",
    "test/f1": "F1 (macro)", "test/loss": "loss", "test/acc_target": "target acc (pooled)",
    "test/acc_retained": "retained acc", CLASS_MEAN: "target acc (mean of task classes)",
    "cl/avg_acc": "avg acc (CL)", "cl/forgetting": "forgetting", "cl/bwt": "BWT",
}


def class_metric(k: int) -> str:
    """Metric key of the accuracy on true class ``k``."""
    return class_metric_key(TEST, "acc", k)


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
    source: str  # "the jobs' `selection` config", "the command line (...)", "conf/train.yaml's `selection` (...)"

    def short(self) -> str:
        """``selected on calibration by target_at_retained, δ = 0.01``: for figure titles."""
        delta = "" if self.rule == "overall" else f", δ = {self.delta:g}"
        return f"selected on calibration by {self.rule}{delta}"

    def text(self) -> str:
        """One sentence for every report."""
        what = "the highest overall calibration accuracy" if self.rule == "overall" else (
            f"the highest calibration target accuracy among settings whose calibration retained accuracy is at least "
            f"the baseline's minus δ = {100 * self.delta:g} pp; when none qualifies, the best retained accuracy "
            "(flagged as a fallback)")
        return (f"Selection rule: `{self.rule}`, δ = {self.delta:g} ({what}; ties go to the smaller knob value), "
                "always on the selection part of the calibration split (`calibration/*`), never on its estimation "
                f"part (`estimation/*`) or on test. Rule from {self.source}.")


@dataclass
class Analysis:
    """Everything the report needs, computed once from the loaded jobs.

    ``tuned`` are the tuned variants (one per knob curve with a choice); ``shown`` the variants of the headline
    views: every variant except the grid points of a tuned curve, plus the tuned variants. ``rows`` is ``frame``
    plus, per tuned variant and seed, the chosen job's row under the tuned label (``seeds`` serves both alike).
    ``frame`` holds every job; statistics use only :attr:`finished` (diverged jobs left out unless
    ``include_diverged``).
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
    selection: SelectionRule
    curves: list[KnobCurve]
    tuned: list[str]                             # tuned variant labels, ordered
    choices: pd.DataFrame                        # tuned.csv: one row per tuned variant and seed
    shown: list[str]
    rows: pd.DataFrame
    seeds: SeedTable                             # per-seed values of rows
    hypothesis: list[dict[str, Any]] = field(default_factory=list)
    tuned_hypothesis: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    include_diverged: bool = False

    @property
    def all_variants(self) -> list[str]:
        """Variants and tuned variants, in report order."""
        return order_variants({v: (self.variant_method[v], self.variant_retention[v])
                               for v in [*self.variants, *self.tuned]})

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.jobs if not j.ok]

    @property
    def diverged(self) -> list[Job]:
        """Finished jobs whose metrics.json records a divergence (included or not)."""
        return [j for j in self.jobs if j.diverged]

    @property
    def excluded(self) -> list[Job]:
        """The diverged jobs left out of every statistic (none with ``include_diverged``)."""
        return [] if self.include_diverged else self.diverged

    @property
    def finished(self) -> list[Job]:
        """The finished jobs that enter the statistics."""
        return [j for j in self.jobs if counted(j, self.include_diverged)]

    def family(self, variant: str) -> str:
        """``naive``, ``retention`` or ``merging`` (the pretrained baseline row is naive)."""
        if variant not in self.variant_method:
            return FAMILIES[0]
        return variant_family(self.variant_method[variant], self.variant_retention[variant])


def counted(job: Job, include_diverged: bool = False) -> bool:
    """Whether ``job`` enters the statistics: finished, and not diverged unless ``include_diverged``."""
    return job.ok and (include_diverged or not job.diverged)


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


def _mapping(d: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    return d.get(key) if isinstance(d.get(key), Mapping) else None


def _metric_row(d: Mapping[str, Any] | None, task_classes: Sequence[int]) -> dict[str, float]:
    row = {m: _num(d, m) for m in (*BASE_METRICS, *map(class_metric, range(10)))}
    task = [row[class_metric(k)] for k in task_classes]
    row[CLASS_MEAN] = float(np.mean(task)) if task and all(math.isfinite(v) for v in task) else math.nan
    return row


def jobs_frame(jobs: Sequence[Job], labels: Mapping[str, str], task_classes: Sequence[int],
               include_diverged: bool = False) -> pd.DataFrame:
    """One row per job: identity, status, final metrics as fractions (all ten class accuracies, for the heatmap;
    :func:`summary_csv_frame` selects the published columns), baseline metrics, the calibration metrics of both
    parts (selection: ``calibration/*``, estimation: ``estimation/*``) and the baseline's, and cost.
    ``diverged`` (with the divergence as ``reason``) marks a run that diverged; ``excluded`` (internal) marks the
    rows left out of the statistics (:func:`counted`)."""
    rows = []
    for job in jobs:
        m = job.metrics or {}
        final, base = _mapping(m, "final"), _mapping(m, "baseline")
        rows.append({
            "job": job.rel, "status": job.status, DIVERGED: job.diverged,
            "reason": divergence_text(job.divergence) if job.diverged else job.reason, "method": job.method,
            "retention": job.retention, "variant": labels[job.rel], "seed": pd.NA if job.seed is None else job.seed,
            "stages": json.dumps(m.get("stages")) if m.get("stages") is not None else "",
            **_metric_row(final, task_classes), **{k: _num(final, k) for k in CL_METRICS},
            "lambda": _num(m, "lambda"), **{f"baseline/{k}": _num(base, k) for k in HEADLINE_METRICS},
            **{k: _num(final, k) for k in (*CALIBRATION_METRICS, *ESTIMATION_METRICS)},
            **{f"baseline/{k}": _num(base, k) for k in (*SELECT_KEYS.values(), *ESTIMATION_METRICS)},
            **_cost_row(m, job.run_info), "excluded": job.diverged and not include_diverged})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["seed"] = frame["seed"].astype("Int64")
    return frame


def _cost_row(metrics: Mapping[str, Any], run_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cost/*`` of metrics.json (numbers) and of run_info.json (wall time; the device as text)."""
    row: dict[str, Any] = {**dict.fromkeys((*COST_KEYS, TRAIN_WALL), math.nan), DEVICE: ""}
    for key, value in [*(_mapping(metrics, "cost") or {}).items(), *(run_info or {}).items()]:
        if str(key).startswith("cost/"):
            row[key] = value if key == DEVICE or isinstance(value, str) else _num({key: value}, key)
    return row


def cost_columns(frame: pd.DataFrame) -> list[str]:
    """Every ``cost/*`` column of the frame: the contract's in order, then any other, sorted."""
    known = [*COST_KEYS, TRAIN_WALL, DEVICE]
    return known + sorted(c for c in frame.columns if c.startswith("cost/") and c not in known)


def summary_csv_frame(frame: pd.DataFrame, task_classes: Sequence[int], knob_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Columns of ``summary.csv``: identity (``diverged``: True for a run that diverged, its ``reason`` says where),
    headline metrics, task-class accuracies, ``cl/*`` and ``lambda`` only where any job has them, the baseline
    reference, the final calibration metrics of the selection part and the baseline's, the same of the estimation
    part, every ``cost/*``, the knob columns of the sweep's knob curves (``retention.lambda_``, ...) and
    ``chosen_for`` (the tuned variants that chose the job)."""
    cols = ["job", "status", DIVERGED, "reason", "method", "retention", "variant", "seed", "stages",
            *BASE_METRICS, *[class_metric(k) for k in task_classes], CLASS_MEAN,
            *[c for c in (*CL_METRICS, "lambda") if c in frame and frame[c].notna().any()],
            *[f"baseline/{k}" for k in HEADLINE_METRICS], *CALIBRATION_METRICS,
            *[f"baseline/{k}" for k in SELECT_KEYS.values()], *ESTIMATION_METRICS,
            *[f"baseline/{k}" for k in ESTIMATION_METRICS], *cost_columns(frame), *knob_keys, CHOSEN_FOR]
    return frame[[c for c in cols if c in frame.columns]]


def _used(frame: pd.DataFrame) -> pd.Series:
    """Mask of the rows that enter the statistics: finished jobs not left out as diverged (:func:`counted`)."""
    return (frame["status"] == "ok") & ~frame["excluded"].astype(bool)


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the jobs that enter the statistics, with a seed."""
    return frame[_used(frame) & frame["seed"].notna()]


def _by_seed(values: pd.Series) -> dict[int, float]:
    return {int(s): float(v) for s, v in values.dropna().items()}


class SeedTable:
    """Per-seed values of every variant of a frame, computed once: ``{variant: frame indexed by seed}``
    of the finished jobs' numeric columns, the mean over jobs of the same variant and seed (NaNs skipped)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self._by: dict[str, pd.DataFrame] = {}
        if not frame.empty:
            done = _done(frame)
            numeric = [c for c in done.columns if c != "seed" and pd.api.types.is_numeric_dtype(done[c])
                       and not pd.api.types.is_bool_dtype(done[c])]
            self._by = {str(v): g.groupby(g["seed"].astype(int))[numeric].mean()
                        for v, g in done.groupby("variant", sort=False)}

    def get(self, metric: str, variant: str) -> dict[int, float]:
        """``{seed: value}`` of the finished jobs of ``variant``, NaNs dropped."""
        table = self._by.get(variant)
        return {} if table is None or metric not in table else _by_seed(table[metric])

    def mean(self, metric: str, variant: str) -> float:
        """Mean over seeds (NaN without any)."""
        values = list(self.get(metric, variant).values())
        return float(np.mean(values)) if values else math.nan


def baseline_per_seed(jobs: Sequence[Job], frame: pd.DataFrame,
                      task_classes: Sequence[int]) -> tuple[pd.DataFrame, str]:
    """Per-seed pretrained-baseline metrics (index seed) and where they came from: the ``final`` metrics of jobs
    of the ``baseline`` method when present, else the ``baseline`` block of every finished job with the study's
    task classes, averaged per seed (they should agree). ``jobs`` are those that enter the statistics."""
    base_jobs = frame[(frame["method"] == BASELINE_METHOD) & _used(frame)] if not frame.empty else frame
    if len(base_jobs):
        rows = base_jobs[["seed", *(c for c in frame.columns if c.startswith("test/"))]].dropna(subset=["seed"])
        source = "jobs of the baseline method (their final metrics)"
    else:
        # only jobs whose target classes are the study's (task_negation may target fewer)
        rows = pd.DataFrame([{"seed": j.seed, **_metric_row(j.metrics["baseline"], task_classes)} for j in jobs
                             if j.ok and j.seed is not None and isinstance((j.metrics or {}).get("baseline"), Mapping)
                             and task_classes_of([j]) == list(task_classes)])
        if rows.empty:
            return pd.DataFrame(), "none"
        by = rows.groupby("seed")
        spread = (by.max() - by.min() > 1e-9).any(axis=1)
        for seed in spread.index[spread]:
            log.warning("baseline metrics of seed %s differ between jobs; averaging them", seed)
        source = "the `baseline` block of each finished job's metrics.json, deduplicated per seed"
    table = rows.groupby("seed").mean(numeric_only=True)
    table.index = table.index.astype(int)
    return table, source


def summary_table(seeds: SeedTable, variants: Sequence[str], metrics: Sequence[str],
                  baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table ``variant, metric, n, mean, std, ci_low, ci_high`` over seeds: mean, std (ddof=1) and
    95% t-CI (fractions; CI clipped but for :data:`UNBOUNDED_METRICS`). A ``baseline`` frame (index seed)
    adds a first row group labelled :data:`BASELINE_LABEL`."""
    groups = [(BASELINE_LABEL, m, baseline[m]) for m in metrics if baseline is not None and m in baseline]
    groups += [(v, m, seeds.get(m, v).values()) for v in variants for m in metrics]
    rows = [{"variant": v, "metric": m, **asdict(t_interval(x, 0.95, None if m in UNBOUNDED_METRICS else (0.0, 1.0)))}
            for v, m, x in groups]
    return pd.DataFrame(rows, columns=["variant", "metric", "n", "mean", "std", "ci_low", "ci_high"])


def order_variants(info: Mapping[str, tuple[str, str]]) -> list[str]:
    """Variants ordered by family (naive, retention, merging), method, retention, label."""
    def key(v: str) -> tuple:
        method, retention = info[v]
        rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
        return (FAMILIES.index(variant_family(method, retention)), rank, method, retention, v)
    return sorted(info, key=key)


def _paired_row(a: Mapping[int, float], b: Mapping[int, float], with_values: bool = False,
                **ident: Any) -> dict[str, Any]:
    """``ident`` and :func:`paired_by_seed` of ``a`` and ``b`` (``diff = a − b``), and ``per_seed`` if asked."""
    result = paired_by_seed(a, b)
    row = {**ident, **asdict(result), "seeds": list(result.seeds)}
    return {**row, "per_seed": [(s, a[s], b[s]) for s in result.seeds]} if with_values else row


def plain_variants(analysis: Analysis, method: str) -> list[str]:
    """Variants of ``method`` without a retention method."""
    return [v for v in analysis.variants
            if analysis.variant_method[v] == method and analysis.variant_retention[v] == NO_RETENTION]


def hypothesis_tests(analysis: Analysis, tuned: bool = False) -> list[dict[str, Any]]:
    """"Sequential beats joint", paired by seed on :data:`HYPOTHESIS_METRICS`, ``diff = sequential − joint``: every
    plain sequential vs every plain joint variant or, ``tuned``, each sequential curve's tuned variant vs each joint
    curve's of the same retention method and knob."""
    if tuned:
        curves = [c for c in analysis.curves if c.label in analysis.tuned]
        pairs = [(s.label, j.label, {"retention": s.retention}) for s in curves if s.method == "sequential"
                 for j in curves if j.method == "joint" and (j.retention, j.key) == (s.retention, s.key)]
    else:
        pairs = [(s, j, {}) for s in plain_variants(analysis, "sequential") for j in plain_variants(analysis, "joint")]
    get = analysis.seeds.get
    return [_paired_row(get(m, s), get(m, j), True, variant=s, reference=j, metric=m, **extra)
            for s, j, extra in pairs for m in HYPOTHESIS_METRICS]


def with_holm(rows: Sequence[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """``rows`` (paired comparisons, :func:`_paired_row`) as one family of tests: each gains ``holm_pvalue`` (its
    paired-t p-value adjusted by Holm's step-down method over the family, :func:`~.stats.holm`), ``family`` and
    ``family_size`` (the tests with a defined p-value), and its verdict becomes :func:`~.stats.verdict` of its CI
    *and* ``holm_pvalue``: supported (not supported) when the whole CI is above (below) 0 and the adjusted p < 0.05,
    else inconclusive."""
    adjusted = holm([r["t_pvalue"] for r in rows])
    size = int(np.isfinite(adjusted).sum())
    return [{**r, "holm_pvalue": float(p), "family": family, "family_size": size,
             "verdict": verdict(r["ci_low"], r["ci_high"], r["n"], pvalue=float(p))} for r, p in zip(rows, adjusted)]


def reference_comparisons(analysis: Analysis) -> list[dict[str, Any]]:
    """Every shown variant vs the pretrained baseline and vs each plain joint variant, ``diff = variant − reference``
    (positive favours the variant). The baseline of a seed is the ``baseline`` block of the variant's own job(s)
    (the exact model it started from), else the per-seed baseline table."""
    rows, get = [], analysis.seeds.get
    for variant in (v for v in analysis.shown if analysis.variant_method[v] != BASELINE_METHOD):
        for metric in COMPARISON_METRICS:
            base = get(f"baseline/{metric}", variant)
            if not base and metric in analysis.baseline:
                base = _by_seed(analysis.baseline[metric])
            refs = [(analysis.baseline_label, base)] if base else []
            rows += [_paired_row(get(metric, variant), b, variant=variant, reference=ref, metric=metric) for ref, b
                     in refs + [(j, get(metric, j)) for j in plain_variants(analysis, "joint") if j != variant]]
    return rows


def selection_rule(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None) -> SelectionRule:
    """The rule compare applies: ``rule``/``delta`` when given (the command line), else the
    ``selection`` config the finished jobs ran with, which must agree (else a one-line
    :class:`SeqftError`), else :mod:`seqft_lightning.selection`'s defaults."""
    found: dict[tuple[str, float], list[str]] = {}
    for job in jobs:
        cfg = job.config.get("selection") if job.ok else None
        if isinstance(cfg, Mapping) and "rule" in cfg:
            found.setdefault((str(cfg["rule"]), float(cfg.get("delta", config_defaults()[1]))), []).append(job.rel)
    ran = "; ".join(f"{r}, delta={d:g} ({len(js)} job(s), e.g. {js[0]})" for (r, d), js in sorted(found.items()))
    cli = rule is not None or delta is not None
    if not cli and len(found) > 1:
        raise SeqftError(f"the jobs of this sweep ran with different selection rules ({ran}): compare them under "
                         f"one rule with --rule {{{','.join(RULES)}}} --delta D, or compare the sweeps apart")
    # what the command line leaves open comes from the jobs where they agree on it, else the defaults
    rules, deltas = {r for r, _ in found}, {d for _, d in found}
    default_rule, default_delta = config_defaults()
    chosen = (rule or (rules.pop() if len(rules) == 1 else default_rule),
              float(delta if delta is not None else deltas.pop() if len(deltas) == 1 else default_delta))
    try:
        check_rule(*chosen)
    except ValueError as err:
        raise SeqftError(str(err) if cli else f"{err} (in the jobs' config)") from None
    if not cli:
        return SelectionRule(*chosen, "the jobs' `selection` config" if found
                             else "conf/train.yaml's `selection` (the jobs carry no `selection` config)")
    if len(found) > 1:
        log.warning("the jobs ran with different selection rules (%s); compare applies %s, delta=%g", ran, *chosen)
    return SelectionRule(*chosen, "the command line (--rule/--delta)" + (f"; the jobs ran with {ran}" if found else ""))


def _chosen_value(value: Any) -> Any:
    return value if is_finite_number(value) else format_value(value)


def limit_point(knob: str, value: Any) -> str:
    """Why ``value`` of ``knob`` ends the knob's range by construction (:data:`LIMIT_POINTS`), else ``""``."""
    for key, limit, why in LIMIT_POINTS:
        if key == knob and (math.isclose(value, limit, abs_tol=1e-12) if is_finite_number(value)
                            and is_finite_number(limit) else format_value(value) == format_value(limit)):
            return why
    return ""


def grid_edge(knob: str, value: Any, index: int, size: int) -> dict[str, Any]:
    """Where the chosen ``value`` (position ``index`` of a seed's ``size`` grid values, in candidate order) lies:
    ``on_edge`` (the smallest or largest value of the grid, so the best setting may lie beyond it), ``edge``
    (``"low"``, ``"high"``, else ``""``; a grid of one value is ``"low"``) and ``limit_point`` (on an edge that is
    the knob's natural end, :func:`limit_point`: why; else ``""``)."""
    edge = "" if size < 1 else "low" if index == 0 else "high" if index == size - 1 else ""
    return {"on_edge": bool(edge), "edge": edge, "limit_point": limit_point(knob, value) if edge else ""}


def _choice_row(frame: pd.DataFrame, row: pd.Series, base: float, **ident: Any) -> dict[str, Any]:
    """A row of tuned.csv: ``ident``, the reference ``base``, the chosen job's calibration metrics of both parts
    (selection, estimation; the estimation part's also of its baseline), test metrics and cost."""
    keys = [*SELECT_KEYS.values(), *ESTIMATION_METRICS, *(f"baseline/{c}" for c in ESTIMATION_METRICS),
            *HEADLINE_METRICS, *(c for c in cost_columns(frame) if c in row.index)]
    return {**ident, BASE_CAL_RETAINED: base, **{c: row[c] for c in keys}}


def tune_curves(frame: pd.DataFrame, curves: Sequence[KnobCurve], rule: SelectionRule) -> pd.DataFrame:
    """One row per knob curve and seed: the knob value :func:`select` picks from the seed's grid.

    Candidates are the curve's finished jobs of that seed in knob order, each as its final calibration ``acc``,
    ``acc_target``, ``acc_retained`` (no calibration metrics: no candidate); the reference of ``target_at_retained``
    is the seed's ``baseline["calibration/acc_retained"]``. The row carries where the choice lies in the seed's
    grid of candidates (:func:`grid_edge`), the chosen job's calibration (both parts) and test metrics and cost, and
    the whole grid's training cost (``cost/grid_train_flops``, ``cost/grid_train_wall_s``).
    """
    rows = []
    for curve in curves:
        grid = json.dumps([_chosen_value(v) for v in curve.values])
        done = _done(frame)
        missing: list[str] = []
        for seed, group in done[done["variant"].isin(curve.variants)].groupby("seed"):
            candidates = []
            for value, label in curve.points:
                jobs = group[group["variant"] == label]
                if len(jobs) > 1:
                    log.warning("%s, seed %s: %d jobs at %s=%s; the first (%s) is the candidate",
                                curve.label, seed, len(jobs), curve.key, format_value(value), jobs.iloc[0]["job"])
                if jobs.empty:
                    continue
                if all(math.isfinite(jobs.iloc[0][c]) for c in SELECT_KEYS.values()):
                    candidates.append((value, jobs.iloc[0]))
                else:
                    missing.append(jobs.iloc[0]["job"])
            if not candidates:
                continue
            spread = [float(c[BASE_CAL_RETAINED]) for _, c in candidates]
            if rule.rule == "target_at_retained" and not math.isfinite(spread[0]):
                log.warning("%s, seed %s: no baseline calibration retained accuracy; no choice", curve.label, seed)
                continue
            if max(spread) - min(spread) > 1e-9:
                log.warning("%s, seed %s: the jobs' baseline calibration retained accuracies differ (%s); "
                            "the first is the reference", curve.label, seed, ", ".join(f"{v:.4f}" for v in spread))
            # what select reads of a job: its final calibration metrics, nothing else
            chosen = select([{k: float(c[col]) for k, col in SELECT_KEYS.items()} for _, c in candidates],
                            spread[0], rule.rule, rule.delta)
            value, job = candidates[chosen.index]
            rows.append({**_choice_row(
                frame, job, spread[0], variant=curve.label, kind="knob", knob=curve.key, grid=grid, seed=int(seed),
                chosen=_chosen_value(value), fallback=bool(chosen.fallback),
                **grid_edge(curve.key, value, chosen.index, len(candidates)), n_candidates=len(candidates),
                job=job["job"], rule=rule.rule, delta=rule.delta),
                GRID_FLOPS: float(group[TRAIN_FLOPS].sum(min_count=1)),
                GRID_WALL: float(group[TRAIN_WALL].sum(min_count=1))})
        if missing:
            log.warning("%s: %d job(s) without calibration metrics are no candidates (e.g. %s)", curve.label,
                        len(missing), ", ".join(missing[:3]))
    return pd.DataFrame(rows)


def merging_choices(jobs: Sequence[Job], frame: pd.DataFrame) -> pd.DataFrame:
    """The λ each merging job chose in-run (by the same rule, on calibration), in the rows of
    :func:`tune_curves` (its grid: the λ of its calibration.csv); methods with their own rule (task negation) and
    without λ are left out. ``jobs`` are those that enter the statistics."""
    by_job = frame.set_index("job") if not frame.empty else frame
    rows = []
    for job in jobs:
        m = job.metrics or {}
        if not job.ok or job.method not in MERGING_METHODS or job.method in OWN_RULE_METHODS \
                or not is_finite_number(m.get("lambda")) or job.seed is None:
            continue
        how = _mapping(m, "lambda_selection") or {}
        grid = sorted(job.calibration["lambda"].dropna().tolist()) if job.calibration is not None else []
        row, lam = by_job.loc[job.rel], float(m["lambda"])
        at = int(np.argmin(np.abs(np.asarray(grid) - lam))) if grid else 0  # the grid point it chose
        rows.append(_choice_row(
            frame, row, row[BASE_CAL_RETAINED], variant=row["variant"], kind="merging (in-run)", knob="lambda",
            grid=json.dumps(grid), seed=int(job.seed), chosen=lam, fallback=bool(how.get("fallback", False)),
            **grid_edge("lambda", lam, at, len(grid)), n_candidates=len(grid), job=job.rel,
            rule=how.get("rule", ""), delta=how.get("delta", math.nan)))
    return pd.DataFrame(rows)


def baseline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the pretrained baseline as a row of its own (variant :data:`BASELINE_LABEL`): the ``baseline/*``
    columns of the seed's first counted job under their plain names, so that "do not fine-tune" can be a candidate of
    the best-method choice in a sweep without jobs of the ``baseline`` method."""
    done = _done(frame)
    if done.empty:
        return pd.DataFrame()
    first = done.sort_values("job").groupby("seed", as_index=False).first()
    renamed = {c: c[len("baseline/"):] for c in first.columns if c.startswith("baseline/")}
    out = first[["seed", "status", "excluded", *renamed]].rename(columns=renamed)
    return out.assign(variant=BASELINE_LABEL, job=[f"(baseline of {j})" for j in first["job"]], method=BASELINE_METHOD,
                      retention=NO_RETENTION)


def best_method(analysis: Analysis) -> dict[str, Any] | None:
    """The best fine-tuning method under the selection rule: :func:`select` over the pretrained baseline ("do not
    fine-tune", first, so a tie keeps it) and the shown variants' (not task negation) mean final calibration metrics
    over seeds on the *selection part*, in report order, with the mean baseline calibration retained accuracy as
    reference. Under ``target_at_retained`` the baseline always qualifies, so a method that loses more than δ of
    retained accuracy is never crowned, and no fallback is.

    The chosen variant's selection-part numbers are biased upwards (a tuned variant's were picked twice on them:
    its knob, then the best method), so its reported estimate is from the disjoint *estimation part*, which no
    choice reads: ``estimate`` = mean over seeds of ``estimation/acc``, ``acc_target``, ``acc_retained`` (NaN for
    runs without them), ``selected`` = the same on the selection part (the candidate row), and ``optimism`` = the
    mean over the seeds that have both of estimation − selection (fractions; **negative: the selection part
    flattered the choice**). Keys of each: ``acc``, ``acc_target``, ``acc_retained``; ``n_estimate``: the seeds
    with an estimate."""
    # the pretrained baseline first ("do not fine-tune"): a method must beat it under the rule to be crowned
    base_label = next((v for v in analysis.shown if analysis.variant_method[v] == BASELINE_METHOD), BASELINE_LABEL)
    candidates = [base_label, *(v for v in analysis.shown if analysis.variant_method[v] not in (BASELINE_METHOD, *OWN_RULE_METHODS))]
    table = [{"variant": v, **{k: analysis.seeds.mean(col, v) for k, col in SELECT_KEYS.items()}} for v in candidates]
    table = [r for r in table if all(math.isfinite(r[k]) for k in SELECT_KEYS)]
    if not table:
        return None
    done = _done(analysis.rows)
    per_seed_base = done[done["variant"].isin([r["variant"] for r in table])].groupby("seed")[BASE_CAL_RETAINED]
    per_seed_base = per_seed_base.mean().dropna()
    base = float(per_seed_base.mean()) if len(per_seed_base) else math.nan
    rule, delta = analysis.selection.rule, analysis.selection.delta
    if rule == "target_at_retained" and not math.isfinite(base):
        return None
    chosen = select(table, base, rule, delta)
    for r in table:
        r["qualifies"] = rule == "overall" or r["acc_retained"] >= base - delta - 1e-12
    v, get = table[chosen.index]["variant"], analysis.seeds.get
    estimate = {k: analysis.seeds.mean(col, v) for k, col in ESTIMATE_KEYS.items()}
    optimism = {k: paired_by_seed(get(ESTIMATE_KEYS[k], v), get(col, v)).mean_diff for k, col in SELECT_KEYS.items()}
    return {"variant": v, "fallback": chosen.fallback, "baseline_retained": base, "candidates": table,
            "selected": {k: table[chosen.index][k] for k in SELECT_KEYS}, "estimate": estimate, "optimism": optimism,
            "n_estimate": min(len(get(col, v)) for col in ESTIMATE_KEYS.values())}


def cost_table(analysis: Analysis) -> pd.DataFrame:
    """Per shown variant: n seeds, the mean over seeds of each numeric ``cost/*`` (tuned: of the
    chosen jobs, plus the whole grid's training cost) and the devices the jobs ran on."""
    rows, choices = analysis.rows, analysis.choices
    numeric = [c for c in cost_columns(analysis.frame) if c != DEVICE]
    out = []
    for v in analysis.shown:
        sel = rows[_used(rows) & (rows["variant"] == v)]
        grid = choices[choices["variant"] == v] if not choices.empty else pd.DataFrame()
        out.append({"variant": v, "n": int(sel["seed"].nunique()),
                    **{c: analysis.seeds.mean(c, v) for c in numeric},
                    DEVICE: ", ".join(sorted({d for d in sel.get(DEVICE, []) if isinstance(d, str) and d})),
                    **{c: float(grid[c].mean()) if c in grid and grid[c].notna().any() else math.nan
                       for c in (GRID_FLOPS, GRID_WALL)}})
    return pd.DataFrame(out, columns=["variant", "n", *numeric, DEVICE, GRID_FLOPS, GRID_WALL])


def analyse(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None,
            include_diverged: bool = False) -> Analysis:
    """Build the full :class:`Analysis` of a sweep; ``rule``/``delta`` override the jobs' selection rule;
    ``include_diverged`` lets diverged runs into the statistics (by default they only keep their summary.csv row)."""
    jobs = list(jobs)
    labels = dict(zip([j.rel for j in jobs], variant_labels([j.config for j in jobs])))
    classes = task_classes_of(jobs)
    frame = jobs_frame(jobs, labels, classes, include_diverged)
    done = [j for j in jobs if counted(j, include_diverged)]
    info = {labels[j.rel]: (j.method, j.retention) for j in done}
    selection = selection_rule(jobs, rule, delta)
    curves = knob_curves({v: next(j.config for j in done if labels[j.rel] == v) for v in info})
    flat = {j.rel: flatten(j.config) for j in jobs}
    for key in dict.fromkeys(c.key for c in curves):  # the knob columns: the job's value where it has that key
        frame[key] = [_chosen_value(flat[rel][key]) if key in flat[rel] else None for rel in frame["job"]]
    knob = tune_curves(frame, curves, selection)
    choices = pd.concat([knob, merging_choices(done, frame)], ignore_index=True)
    tuned_info = {c.label: (c.method, c.retention) for c in curves if c.label in set(knob.get("variant", []))}
    for c in curves:
        if c.label not in tuned_info:
            log.warning("%s: no seed has a choice (no calibration metrics?); its grid points are shown as they are",
                        c.label)
    if not frame.empty:
        chosen_by = {} if knob.empty else knob.groupby("job")["variant"].agg(lambda v: "; ".join(sorted(set(v))))
        frame[CHOSEN_FOR] = [chosen_by.get(rel, "") for rel in frame["job"]]
    # frame plus each tuned variant's chosen job rows under the tuned label
    rows = frame if knob.empty else pd.concat([frame, frame.set_index("job").loc[knob["job"].tolist()].reset_index()
                                               .assign(variant=knob["variant"].tolist())], ignore_index=True)
    in_tuned_curve = {v for c in curves if c.label in tuned_info for v in c.variants}
    all_info = {**info, **tuned_info}
    baseline, source = baseline_per_seed(done, frame, classes)
    has_baseline_method = any(m == BASELINE_METHOD for m, _ in info.values())
    metrics = ["test/acc", "test/precision", "test/recall", "test/f1", *map(class_metric, classes), CLASS_MEAN,
               TARGET, RETAINED, *(m for m in ("cl/forgetting", "cl/bwt") if m in frame and frame[m].notna().any())]
    if not has_baseline_method and not frame.empty:
        rows = pd.concat([rows, baseline_rows(frame)], ignore_index=True)  # the "don't fine-tune" candidate
    seeds = SeedTable(rows)
    analysis = Analysis(
        jobs=jobs, labels=labels, frame=frame, task_classes=classes, variants=order_variants(info),
        variant_method={v: m for v, (m, _) in all_info.items()},
        variant_retention={v: r for v, (_, r) in all_info.items()}, baseline=baseline,
        baseline_label="baseline" if has_baseline_method else BASELINE_LABEL, baseline_source=source,
        table_metrics=metrics, summary=summary_table(seeds, order_variants(all_info), metrics,
                                                     None if has_baseline_method else baseline),
        selection=selection, curves=curves, tuned=order_variants(tuned_info), choices=choices,
        shown=order_variants({v: all_info[v] for v in all_info if v not in in_tuned_curve}), rows=rows, seeds=seeds,
        include_diverged=include_diverged)
    counts = _done(frame).groupby(["variant", "seed"]).size() if not frame.empty else pd.Series(dtype=int)
    for (variant, seed), n in counts[counts > 1].items():
        log.warning("variant %s has %d finished jobs with seed %s; their metrics are averaged", variant, n, seed)
    naive, tuned = hypothesis_tests(analysis), hypothesis_tests(analysis, tuned=True)
    family = with_holm([*naive, *tuned], HYPOTHESIS_FAMILY)  # one family: every sequential-vs-joint test shown
    analysis.hypothesis, analysis.tuned_hypothesis = family[:len(naive)], family[len(naive):]
    analysis.comparisons = with_holm(reference_comparisons(analysis), REFERENCE_FAMILY)
    analysis.best = best_method(analysis)
    return analysis


def _sequence_stages(stages: pd.DataFrame) -> pd.DataFrame:
    """The rows of a stage table that form a training sequence: when the last stage combines models trained
    separately from the baseline (its ``trained_classes`` is not a class list such as ``3+4+7``, e.g.
    ``merged``), the stages in between are those models, not steps: only stage 0 and the last are kept."""
    if "trained_classes" not in stages:
        return stages
    numeric = pd.to_numeric(stages["stage"], errors="coerce")
    last = numeric.max()
    last_label = str(stages.loc[numeric == last, "trained_classes"].iloc[0])
    if last > 0 and not all(part.strip().isdigit() for part in last_label.split("+")):
        return stages[(numeric == 0) | (numeric == last)]
    return stages


def shown_jobs(analysis: Analysis) -> list[tuple[str, Job]]:
    """``(variant, job)`` of every shown variant (a tuned variant: its chosen jobs)."""
    by_rel, rows = {j.rel: j for j in analysis.jobs}, analysis.rows
    return [(v, by_rel[rel]) for v in analysis.shown
            for rel in rows.loc[_used(rows) & (rows["variant"] == v), "job"]]


def _tidy(parts: Iterable[tuple[str, Job, pd.DataFrame | None]], columns: list[str], subset: list[str],
          text: Sequence[str] = ()) -> pd.DataFrame:
    """The ``columns`` of each ``(variant, job, frame)`` (skipped when None or empty) as numbers (``text`` as text),
    plus ``variant`` and ``seed``, stacked, without the rows that lack a ``subset`` value; ``variant, seed,
    *columns`` when there is none."""
    frames = [df[columns].apply(lambda c: c.astype(str) if c.name in text else pd.to_numeric(c, errors="coerce"))
              .assign(variant=v, seed=job.seed) for v, job, df in parts if df is not None and not df.empty]
    if not frames:
        return pd.DataFrame(columns=["variant", "seed", *columns])
    return pd.concat(frames, ignore_index=True).dropna(subset=subset)


def stage_trend_frame(analysis: Analysis) -> pd.DataFrame:
    """Long ``variant, seed, stage, evaluated, acc`` from the stage tables of the shown variants' jobs."""
    return _tidy([(v, j, _sequence_stages(j.stages)) for v, j in shown_jobs(analysis)
                  if j.stages is not None and not j.stages.empty], ["stage", "evaluated", "acc"], ["stage", "acc"],
                 text=["evaluated"])


def class_accuracy_matrix(analysis: Analysis) -> pd.DataFrame:
    """Final accuracy per true class (columns 0..9), mean over seeds; rows = shown variants
    (the pretrained baseline first when known). Fractions."""
    classes, b, rows = [class_metric(k) for k in range(10)], analysis.baseline, {}
    if not b.empty and analysis.baseline_label == BASELINE_LABEL:
        rows[BASELINE_LABEL] = [b[c].mean() if c in b else np.nan for c in classes]
    rows.update({v: [analysis.seeds.mean(c, v) for c in classes] for v in analysis.shown})
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(range(10)))


def confusion_by_variant(analysis: Analysis) -> dict[str, tuple[np.ndarray, int, list]]:
    """Final confusion matrix per shown variant, summed over seeds: ``{variant: (counts, n_jobs, stages)}``."""
    out: dict[str, tuple[np.ndarray, int, list]] = {}
    for variant, job in shown_jobs(analysis):
        if job.confusion is None:
            continue
        total, n, stages = out.get(variant, (np.zeros_like(job.confusion), 0, []))
        if total.shape != job.confusion.shape:
            log.warning("confusion matrix of %s has shape %s; skipped", job.rel, job.confusion.shape)
            continue
        out[variant] = (total + job.confusion, n + 1, [*stages, job.confusion_stage])
    return out


def curves_frame(analysis: Analysis, split: str = "train", metric: str = "loss",
                 min_stage: int = 1) -> pd.DataFrame:
    """Long ``variant, seed, stage, step, value`` of one curve of the shown variants (fine-tuning
    stages only by default)."""
    parts = []
    for variant, job in shown_jobs(analysis):
        if (c := job.curves) is not None and not c.empty:
            sel = c[(c["split"].astype(str) == split) & (c["metric"].astype(str) == metric)]
            parts.append((variant, job, sel[pd.to_numeric(sel["stage"], errors="coerce") >= min_stage]))
    return _tidy(parts, ["stage", "epoch", "step", "value"], ["step", "value"])


def calibration_frame(analysis: Analysis) -> tuple[pd.DataFrame, dict[str, list[float]]]:
    """Long calibration sweep ``variant, seed, lambda, acc, acc_target, acc_retained`` and
    the λ each job selected (``{variant: [lambda, ...]}``)."""
    parts = [(analysis.labels[j.rel], j, j.calibration) for j in analysis.finished
             if j.calibration is not None and not j.calibration.empty]
    chosen: dict[str, list[float]] = {}
    for variant, job, _ in parts:
        if is_finite_number((job.metrics or {}).get("lambda")):
            chosen.setdefault(variant, []).append(float(job.metrics["lambda"]))
    return _tidy(parts, ["lambda", "acc", "acc_target", "acc_retained"], ["lambda"]), chosen


TRADEOFF_COLUMNS = ["kind", "series", "variant", "method", "retention", "knob", "value", "n",
                    "x", "x_lo", "x_hi", "y", "y_lo", "y_hi", "selected"]


def pareto_front(x: Sequence[float], y: Sequence[float]) -> np.ndarray:
    """Mask of the points no other point dominates (at least as good in both coordinates and better in one;
    higher is better; NaNs never on it)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    mask = np.zeros(len(x), dtype=bool)
    for i in np.flatnonzero(ok):
        better = ok & (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        mask[i] = not better.any()
    return mask


def _xy(x: Iterable[float], y: Iterable[float], **ident: Any) -> dict[str, Any]:
    """Mean and clipped 95% t-interval over seeds of test retained (x) and target (y) accuracy."""
    xs, ys = (t_interval(v, 0.95, (0.0, 1.0)) for v in (x, y))
    return {**ident, "n": min(xs.n, ys.n), "x": xs.mean, "x_lo": xs.ci_low, "x_hi": xs.ci_high,
            "y": ys.mean, "y_lo": ys.ci_low, "y_hi": ys.ci_high}


def tradeoff_frame(analysis: Analysis) -> pd.DataFrame:
    """Test target (y) vs retained (x) accuracy of everything on the trade-off plot, means over seeds.

    ``kind``: ``curve`` (a knob curve's grid points, ``series`` = its tuned label, ``value`` = the knob value),
    ``lambda`` (a merging method's λ grid from ``lambda_test.csv``), ``point`` (every shown variant and the
    pretrained baseline). ``selected``: a tuned variant, or a merging variant whose λ was chosen on calibration.
    ``pareto``: on the Pareto front of all of them."""
    seeds, method, retention = analysis.seeds, analysis.variant_method, analysis.variant_retention

    def variant_xy(v: str, **ident: Any) -> dict[str, Any]:
        return _xy(seeds.get(RETAINED, v).values(), seeds.get(TARGET, v).values(), variant=v, **ident)

    out = [variant_xy(label, kind="curve", series=c.label, method=c.method, retention=c.retention, knob=c.key,
                      value=format_value(value), selected=False) for c in analysis.curves for value, label in c.points]
    columns = ["lambda", "acc_target", "acc_retained"]
    lam = _tidy([(analysis.labels[j.rel], j, j.lambda_test) for j in analysis.finished
                 if j.method not in OWN_RULE_METHODS], columns, columns)
    out += [_xy(g["acc_retained"], g["acc_target"], kind="lambda", series=v, variant=v, method=method[v],
                retention=NO_RETENTION, knob="lambda", value=format_value(float(value)), selected=False)
            for (v, value), g in lam.groupby(["variant", "lambda"], sort=True)]
    b = analysis.baseline
    if analysis.baseline_label == BASELINE_LABEL and not b.empty:
        out.append(_xy(b.get(RETAINED, []), b.get(TARGET, []), kind="point", series=BASELINE_LABEL,
                       variant=BASELINE_LABEL, method=BASELINE_METHOD, retention=NO_RETENTION, knob="", value="",
                       selected=False))
    # task negation's target is the classes it forgets: another question, not on these axes
    out += [variant_xy(v, kind="point", series=v, method=method[v], retention=retention[v], knob="", value="",
                       selected=v in analysis.tuned or v in set(lam["variant"]))
            for v in analysis.shown if method[v] not in OWN_RULE_METHODS]
    frame = pd.DataFrame(out, columns=TRADEOFF_COLUMNS)
    frame["pareto"] = pareto_front(frame["x"], frame["y"]) if len(frame) else []
    return frame
