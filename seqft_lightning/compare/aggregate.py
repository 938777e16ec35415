"""Tables built from loaded jobs: the per-job frame, per-variant summaries over seeds,
the per-seed baseline, paired comparisons, and tidy frames that the plots draw.

Accuracies stay fractions in [0, 1] here; presentation (percent) happens in the report.
Per-seed values are the mean over jobs of the same variant and seed (normally one job).
Confidence intervals of bounded metrics are clipped to their range (see :mod:`.stats`).
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
from seqft_lightning.compare.variants import (FAMILIES, MERGING_METHODS, NAIVE_METHODS, NO_RETENTION,
                                              variant_family, variant_labels)
from seqft_lightning.contract import (CL_AVG_ACC, CL_BWT, CL_FORGETTING, GROUP_METRICS, TEST,
                                      class_metric_key, metric_key)

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


@dataclass
class Analysis:
    """Everything the report needs, computed once from the loaded jobs."""

    jobs: list[Job]
    labels: dict[str, str]                       # job rel path -> variant label
    frame: pd.DataFrame                          # one row per job (summary.csv)
    task_classes: list[int]
    variants: list[str]                          # ordered, only variants with >= 1 finished job
    variant_method: dict[str, str]
    variant_retention: dict[str, str]
    baseline: pd.DataFrame                       # index = seed, columns = metric keys
    baseline_label: str
    baseline_source: str
    table_metrics: list[str]
    summary: pd.DataFrame                        # long: variant, metric, n, mean, std, ci_low, ci_high
    hypothesis: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)

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
        rows.append(row)
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["seed"] = frame["seed"].astype("Int64")
    return frame


def summary_csv_frame(frame: pd.DataFrame, task_classes: Sequence[int]) -> pd.DataFrame:
    """Columns of ``summary.csv``: identity, headline metrics, task-class accuracies,
    ``cl/*`` and ``lambda`` only where any job has them, and the baseline reference."""
    cols = ["job", "status", "reason", "method", "retention", "variant", "seed", "stages",
            *BASE_METRICS, *[class_metric(k) for k in task_classes], CLASS_MEAN]
    optional = [*CL_METRICS, "lambda"]
    cols += [c for c in optional if c in frame and frame[c].notna().any()]
    cols += [f"baseline/{k}" for k in (ACC, TARGET, RETAINED)]
    return frame[[c for c in cols if c in frame.columns]]


# --------------------------------------------------------------------------- per-seed values

def per_seed(frame: pd.DataFrame, metric: str, variant: str) -> dict[int, float]:
    """``{seed: value}`` of the finished jobs of ``variant`` (mean over duplicate seeds), NaNs dropped."""
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


def summary_table(frame: pd.DataFrame, variants: Sequence[str], metrics: Sequence[str],
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
                a = per_seed(analysis.frame, metric, seq)
                b = per_seed(analysis.frame, metric, joint)
                row = _result_row(paired_by_seed(a, b), variant=seq, reference=joint, metric=metric)
                row["per_seed"] = [(s, a[s], b[s]) for s in row["seeds"]]
                rows.append(row)
    return rows


def reference_comparisons(analysis: Analysis) -> list[dict[str, Any]]:
    """Every variant vs the pretrained baseline and vs each plain joint variant;
    ``diff = variant − reference`` (positive favours the variant).

    The baseline of a seed is the ``baseline`` block of the variant's own job(s) (the exact
    model it started from); the per-seed baseline table is the fallback.
    """
    rows = []
    joints = plain_variants(analysis, "joint")
    for variant in analysis.variants:
        if analysis.variant_method[variant] == BASELINE_METHOD:
            continue
        for metric in COMPARISON_METRICS:
            a = per_seed(analysis.frame, metric, variant)
            b = per_seed(analysis.frame, f"baseline/{metric}", variant)
            if not b and not analysis.baseline.empty and metric in analysis.baseline:
                b = {int(s): float(v) for s, v in analysis.baseline[metric].dropna().items()}
            if b:
                rows.append(_result_row(paired_by_seed(a, b), variant=variant,
                                        reference=analysis.baseline_label, metric=metric))
            for joint in joints:
                if joint == variant:
                    continue
                b = per_seed(analysis.frame, metric, joint)
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


def analyse(jobs: Sequence[Job]) -> Analysis:
    """Build the full :class:`Analysis` of a sweep."""
    jobs = list(jobs)
    labels = dict(zip([j.rel for j in jobs], variant_labels([j.config for j in jobs])))
    classes = task_classes_of(jobs)
    frame = jobs_frame(jobs, labels, classes)
    info = {labels[j.rel]: (j.method, j.retention) for j in jobs if j.ok}
    variants = order_variants(info)
    baseline, source = baseline_per_seed(jobs, frame, classes)
    has_baseline_method = any(info[v][0] == BASELINE_METHOD for v in variants)
    metrics = table_metrics_for(frame, classes)
    summary = summary_table(frame, variants, metrics,
                            None if has_baseline_method else baseline, BASELINE_LABEL)
    analysis = Analysis(
        jobs=jobs, labels=labels, frame=frame, task_classes=classes, variants=variants,
        variant_method={v: info[v][0] for v in variants},
        variant_retention={v: info[v][1] for v in variants},
        baseline=baseline,
        baseline_label=BASELINE_LABEL if not has_baseline_method else "baseline",
        baseline_source=source, table_metrics=metrics, summary=summary,
    )
    _warn_duplicate_seeds(frame)
    analysis.hypothesis = hypothesis_tests(analysis)
    analysis.comparisons = reference_comparisons(analysis)
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


def stage_trend_frame(analysis: Analysis) -> pd.DataFrame:
    """Long ``variant, seed, stage, evaluated, acc`` from each finished job's stage table."""
    parts = []
    for job in analysis.finished:
        if job.stages is None or job.stages.empty:
            continue
        df = _sequence_stages(job.stages)[["stage", "evaluated", "acc"]].copy()
        df["variant"] = analysis.labels[job.rel]
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
    """Final accuracy per true class (columns 0..9), mean over seeds; rows = variants
    (the pretrained baseline first when known). Fractions."""
    rows = {}
    classes = [class_metric(k) for k in range(10)]
    if not analysis.baseline.empty and analysis.baseline_label == BASELINE_LABEL:
        rows[analysis.baseline_label] = [analysis.baseline[c].mean() if c in analysis.baseline else np.nan
                                         for c in classes]
    for variant in analysis.variants:
        rows[variant] = [np.mean(list(per_seed(analysis.frame, c, variant).values()) or [np.nan])
                         for c in classes]
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(range(10)))


def confusion_by_variant(analysis: Analysis) -> dict[str, tuple[np.ndarray, int, list]]:
    """Final confusion matrix per variant, summed over seeds: ``{variant: (counts, n_jobs, stages)}``."""
    out: dict[str, tuple[np.ndarray, int, list]] = {}
    for job in analysis.finished:
        if job.confusion is None:
            continue
        variant = analysis.labels[job.rel]
        if variant in out:
            total, n, stages = out[variant]
            if total.shape != job.confusion.shape:
                log.warning("confusion matrix of %s has shape %s; skipped", job.rel, job.confusion.shape)
                continue
            out[variant] = (total + job.confusion, n + 1, stages + [job.confusion_stage])
        else:
            out[variant] = (job.confusion.copy(), 1, [job.confusion_stage])
    return {v: out[v] for v in analysis.variants if v in out}


def curves_frame(analysis: Analysis, split: str = "train", metric: str = "loss",
                 min_stage: int = 1) -> pd.DataFrame:
    """Long ``variant, seed, stage, step, value`` of one curve (fine-tuning stages only by default)."""
    parts = []
    for job in analysis.finished:
        c = job.curves
        if c is None or c.empty:
            continue
        sel = c[(c["split"].astype(str) == split) & (c["metric"].astype(str) == metric)]
        sel = sel[pd.to_numeric(sel["stage"], errors="coerce") >= min_stage]
        if sel.empty:
            continue
        df = sel[["stage", "epoch", "step", "value"]].apply(pd.to_numeric, errors="coerce")
        df["variant"] = analysis.labels[job.rel]
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
