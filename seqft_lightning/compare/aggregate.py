"""Tables from loaded jobs: the per-job frame, tuned variants, summaries over seeds, paired comparisons and costs.

Accuracies are fractions in [0, 1]; a variant's value for a seed is the mean over its counted jobs of that seed. A
*tuned* variant has, per seed, the job of its knob grid that :func:`seqft_lightning.selection.select` picks from the
jobs' final ``calibration/*`` metrics (the selection part); no choice reads test or the disjoint estimation part
(``estimation/*``). Diverged jobs are left out of every statistic unless ``include_diverged``.
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

from seqft_lightning.compare.load import Job
from seqft_lightning.compare.stats import holm, paired_by_seed, t_interval_groups, verdict
from seqft_lightning.compare.variants import (FAMILIES, MERGING_METHODS, NAIVE_METHODS, NO_RETENTION, KnobGrid,
                                              format_value, knob_grids, variant_family, variant_labels)
from seqft_lightning.contract import (CL_AVG_ACC, CL_BWT, CL_FORGETTING, ESTIMATION_PART, GROUP_METRICS, SELECTION_PART,
                                      SELECTION_SCORE, TEST, class_metric_key, flatten, metric_key)
from seqft_lightning.errors import SeqftError
from seqft_lightning.selection import RULES, check_rule, config_defaults, select
from seqft_lightning.values import is_finite_number, is_number

log = logging.getLogger(__name__)

BASELINE_METHOD, BASELINE_LABEL = "baseline", "baseline (pretrained)"
ACC, TARGET, RETAINED, LOSS = (metric_key(TEST, m) for m in ("acc", "acc_target", "acc_retained", "loss"))
CLASS_MEAN = metric_key(TEST, "acc_task_class_mean")  # compare's own: unweighted mean over task classes
BASE_METRICS = tuple(metric_key(TEST, m) for m in GROUP_METRICS)
CL_METRICS = (CL_AVG_ACC, CL_FORGETTING, CL_BWT)
UNBOUNDED_METRICS = (LOSS, CL_FORGETTING, CL_BWT)  # not fractions in [0, 1]: their CIs are never clipped
HYPOTHESIS_METRICS = (TARGET, ACC)  # sequential − joint, in report order
COMPARISON_METRICS = (TARGET, RETAINED, ACC)  # variant − reference
HEADLINE_METRICS = (ACC, TARGET, RETAINED)
SELECT_KEYS = {k: metric_key(SELECTION_PART, k) for k in ("acc", "acc_target", "acc_retained")}  # all a choice reads
CALIBRATION_METRICS = (*SELECT_KEYS.values(), SELECTION_SCORE)
ESTIMATE_KEYS = {k: metric_key(ESTIMATION_PART, k) for k in SELECT_KEYS}  # the same on the estimation part
ESTIMATION_METRICS = tuple(ESTIMATE_KEYS.values())
BASE_CAL_RETAINED = f"baseline/{SELECT_KEYS['acc_retained']}"  # the reference of the target_at_retained rule
#: metrics.json's deterministic ``cost``, in report order (run_info.json adds wall time and device)
COST_KEYS = ("cost/optimizer_steps", "cost/train_samples", "cost/train_flops", "cost/eval_flops",
             "cost/total_flops", "cost/extra_memory_bytes", "cost/pretrain_steps")
TRAIN_FLOPS, TRAIN_WALL, DEVICE = "cost/train_flops", "cost/train_wall_s", "cost/device"
GRID_FLOPS, GRID_WALL = "cost/grid_train_flops", "cost/grid_train_wall_s"  # a tuned seed's whole grid
OWN_RULE_METHODS = ("task_negation",)  # λ by its published rule: not tuned here, never the best method
#: ``(knob, value, why)``: values that end a knob's range by construction, so a choice there is named, not censored
LIMIT_POINTS = (("lambda", 0.0, "λ = 0 is the pretrained baseline itself"),
                ("retention.trainable", ["output"], "only the output layer trains: the smallest trainable set; "
                                                    "training less is the baseline"))
METRIC_NAMES = {
    "test/acc": "accuracy", "test/precision": "precision (macro)", "test/recall": "recall (macro)",
    "test/f1": "F1 (macro)", "test/loss": "loss", "test/acc_target": "target acc (pooled)",
    "test/acc_retained": "retained acc", CLASS_MEAN: "target acc (mean of task classes)",
    "cl/avg_acc": "avg acc (CL)", "cl/forgetting": "forgetting", "cl/bwt": "BWT",
}


def class_metric(k: int) -> str:
    """Metric key of the test accuracy on true class ``k``."""
    return class_metric_key(TEST, "acc", k)


def metric_name(metric: str) -> str:
    """Human-readable metric name."""
    is_class = metric.startswith("test/acc_class_")
    return f"class {metric.rsplit('_', 1)[-1]} acc" if is_class else METRIC_NAMES.get(metric, metric)


@dataclass(frozen=True)
class SelectionRule:
    """The rule compare applies (:mod:`seqft_lightning.selection`) and where it came from (the report's sentence on
    it: ``selection_text`` in ``templates/sections.md.j2``)."""

    rule: str
    delta: float
    source: str

    def short(self) -> str:
        """``selected on calibration by target_at_retained, δ = 0.01``: for figure titles."""
        return f"selected on calibration by {self.rule}" + ("" if self.rule == "overall" else f", δ = {self.delta:g}")


class SeedTable:
    """Per-seed values of every variant of a frame: each numeric column's mean over the counted jobs of one variant
    and seed (NaNs skipped); a variant with several such jobs for a seed is logged."""

    def __init__(self, frame: pd.DataFrame) -> None:
        done = _done(frame).astype({"seed": int})
        groups = done.groupby(["variant", "seed"])
        for (variant, seed), n in groups.size()[lambda n: n > 1].items():
            log.warning("variant %s has %d finished jobs with seed %s; their metrics are averaged", variant, n, seed)
        table = groups[[c for c in done.select_dtypes("number").columns if c != "seed"]].mean()
        self.by_variant = {str(v): t.droplevel("variant") for v, t in table.groupby(level="variant")}

    def get(self, metric: str, variant: str) -> dict[int, float]:
        """``{seed: value}`` of ``variant``, NaNs dropped."""
        table = self.by_variant.get(variant, {})
        return {int(s): float(v) for s, v in table[metric].dropna().items()} if metric in table else {}

    def mean(self, metric: str, variant: str) -> float:
        """Mean over seeds (NaN without any)."""
        values = list(self.get(metric, variant).values())
        return float(np.mean(values)) if values else math.nan


@dataclass
class Analysis:
    """Everything the report needs, computed once from the loaded jobs. ``shown``: the variants of the headline
    views (every variant but the grid points of a tuned grid, plus the tuned variants); ``rows``: ``frame`` plus, per
    tuned variant and seed, the chosen job's row under the tuned label; statistics use only :attr:`finished`."""

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
    grids: list[KnobGrid]
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

    all_variants = property(lambda self: order_variants({v: (self.variant_method[v], self.variant_retention[v])
                                                         for v in [*self.variants, *self.tuned]}))
    failed = property(lambda self: [j for j in self.jobs if not j.ok])
    diverged = property(lambda self: [j for j in self.jobs if j.diverged])  # finished, included or not
    excluded = property(lambda self: [] if self.include_diverged else self.diverged)  # left out of the statistics
    finished = property(lambda self: [j for j in self.jobs if counted(j, self.include_diverged)])
    #: ``[BASELINE_LABEL]`` when the sweep has the synthetic pretrained-baseline row, else ``[]``
    baseline_row = property(lambda self: [BASELINE_LABEL][:self.baseline_label == BASELINE_LABEL
                                                          and not self.baseline.empty])

    def family(self, variant: str) -> str:
        """``naive``, ``retention`` or ``merging`` (the pretrained baseline row is naive)."""
        return variant_family(self.variant_method[variant], self.variant_retention[variant]) \
            if variant in self.variant_method else FAMILIES[0]


def counted(job: Job, include_diverged: bool = False) -> bool:
    """Whether ``job`` enters the statistics: finished, and not diverged unless ``include_diverged``."""
    return job.ok and (include_diverged or not job.diverged)


def task_classes_of(jobs: Iterable[Job]) -> list[int]:
    """Union of the finished jobs' ``task_classes`` (metrics.json)."""
    return sorted({int(c) for job in jobs if job.ok for c in job.metrics.get("task_classes") or ()})


def _num(d: Mapping[str, Any] | None, key: str) -> float:
    value = (d or {}).get(key)
    return float(value) if is_finite_number(value) else math.nan


def _metric_row(d: Mapping[str, Any] | None, task_classes: Sequence[int]) -> dict[str, float]:
    """The test metrics of a metrics.json block (all ten class accuracies) and their :data:`CLASS_MEAN`."""
    row = {m: _num(d, m) for m in (*BASE_METRICS, *map(class_metric, range(10)))}
    task = [row[class_metric(k)] for k in task_classes]
    row[CLASS_MEAN] = float(np.mean(task)) if task and all(math.isfinite(v) for v in task) else math.nan
    return row


def jobs_frame(jobs: Sequence[Job], labels: Mapping[str, str], task_classes: Sequence[int],
               include_diverged: bool = False) -> pd.DataFrame:
    """One row per job, in summary.csv's column order: identity, final test metrics (fractions; all ten class
    accuracies), the baseline's, the final calibration metrics of both parts and the baseline's, and cost;
    ``excluded`` (internal) marks the rows left out of the statistics (:func:`counted`)."""
    rows = []
    for job in jobs:
        m, info, d = job.metrics or {}, job.run_info or {}, job.divergence or {}
        final, base = m.get("final"), m.get("baseline")
        loss = f" (train loss {d['train_loss']:.4g})" if is_number(d.get("train_loss")) else ""
        rows.append({
            "job": job.rel, "status": job.status, "diverged": job.diverged, "reason": job.reason if not job.diverged
            else f"diverged in stage {d.get('stage')}, epoch {d.get('epoch')}{loss}: {d.get('reason')}",
            "method": job.method, "retention": job.retention, "variant": labels[job.rel], "seed": job.seed,
            "stages": json.dumps(m["stages"]) if m.get("stages") is not None else "",
            **_metric_row(final, task_classes), **{k: _num(final, k) for k in CL_METRICS}, "lambda": _num(m, "lambda"),
            **{f"baseline/{k}": _num(base, k) for k in HEADLINE_METRICS},
            **{k: _num(final, k) for k in CALIBRATION_METRICS},
            **{f"baseline/{k}": _num(base, k) for k in SELECT_KEYS.values()},
            **{k: _num(final, k) for k in ESTIMATION_METRICS},
            **{f"baseline/{k}": _num(base, k) for k in ESTIMATION_METRICS},
            **{k: _num(m.get("cost"), k) for k in COST_KEYS}, TRAIN_WALL: _num(info, TRAIN_WALL),
            DEVICE: info.get(DEVICE, ""), "excluded": job.diverged and not include_diverged})
    return pd.DataFrame(rows).astype({"seed": "Int64"})


def summary_csv_frame(analysis: Analysis) -> pd.DataFrame:
    """``summary.csv``: the job frame without the other classes' accuracies, the ``cl/*`` and ``lambda`` columns
    no job has, and ``excluded``; after the cost, the knob columns of the sweep's grids and ``chosen_for`` (the tuned
    variants that chose the job)."""
    frame = analysis.frame
    unused = [class_metric(k) for k in range(10) if k not in analysis.task_classes]
    return frame.drop(columns=[*unused, *(c for c in (*CL_METRICS, "lambda") if frame[c].isna().all()), "excluded"])


def _used(frame: pd.DataFrame) -> pd.Series:
    """Mask of the rows that enter the statistics (:func:`counted`)."""
    return (frame["status"] == "ok") & ~frame["excluded"].astype(bool)


def _done(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that enter the statistics, with a seed."""
    return frame[_used(frame) & frame["seed"].notna()]


def baseline_per_seed(jobs: Sequence[Job], frame: pd.DataFrame,
                      task_classes: Sequence[int]) -> tuple[pd.DataFrame, str]:
    """Per-seed pretrained-baseline metrics (index seed) and their source: the final metrics of the ``baseline``
    method's jobs, else the ``baseline`` block of every counted job (``jobs``) with the study's task classes."""
    if (is_base := (frame["method"] == BASELINE_METHOD) & _used(frame)).any():
        rows = frame.loc[is_base, ["seed", *(c for c in frame.columns if c.startswith("test/"))]].dropna(subset="seed")
        source = "jobs of the baseline method (their final metrics)"
    else:  # only jobs whose target classes are the study's (task_negation may target fewer)
        rows = pd.DataFrame([{"seed": j.seed, **_metric_row(j.metrics["baseline"], task_classes)} for j in jobs
                             if j.metrics.get("baseline") and task_classes_of([j]) == list(task_classes)])
        if rows.empty:
            return pd.DataFrame(), "none"
        spread = (rows.groupby("seed").max() - rows.groupby("seed").min() > 1e-9).any(axis=1)
        for seed in spread.index[spread]:
            log.warning("baseline metrics of seed %s differ between jobs; averaging them", seed)
        source = "the `baseline` block of each finished job's metrics.json, deduplicated per seed"
    table = rows.groupby("seed").mean(numeric_only=True)
    return table.set_axis(table.index.astype(int)), source


def summary_table(seeds: SeedTable, variants: Sequence[str], metrics: Sequence[str],
                  baseline: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long table ``variant, metric, n, mean, std, ci_low, ci_high`` over seeds (fractions; std ddof=1, 95 % t-CI
    clipped to [0, 1] but for :data:`UNBOUNDED_METRICS`); a ``baseline`` frame (index seed) adds a first group
    :data:`BASELINE_LABEL`."""
    tables = {**({BASELINE_LABEL: baseline} if baseline is not None else {}),
              **{v: seeds.by_variant[v] for v in variants if v in seeds.by_variant}}
    long = pd.concat([t.reindex(columns=metrics).melt(var_name="metric").assign(variant=v) for v, t in tables.items()])
    out = t_interval_groups(long.astype({"value": float}), ["variant", "metric"], "value")
    out = out.set_index(["variant", "metric"])
    bounded = ~out.index.get_level_values("metric").isin(UNBOUNDED_METRICS)
    out.loc[bounded, ["ci_low", "ci_high"]] = out.loc[bounded, ["ci_low", "ci_high"]].clip(0.0, 1.0)
    order = [(BASELINE_LABEL, m) for m in metrics if baseline is not None and m in baseline]
    out = out.reindex(order + [(v, m) for v in variants for m in metrics]).rename_axis(["variant", "metric"])
    out = out.assign(n=out["n"].fillna(0).astype(int)).reset_index()
    return out[["variant", "metric", "n", "mean", "std", "ci_low", "ci_high"]]


def order_variants(info: Mapping[str, tuple[str, str]]) -> list[str]:
    """Variants ordered by family (naive, retention, merging), method, retention, label."""
    rank = {m: i for i, m in enumerate(NAIVE_METHODS + MERGING_METHODS)}  # an unknown method last
    return sorted(info, key=lambda v: (FAMILIES.index(variant_family(*info[v])), rank.get(info[v][0], len(rank)),
                                       *info[v], v))


def _paired_row(a: Mapping[int, float], b: Mapping[int, float], **ident: Any) -> dict:
    """``ident`` and :func:`~.stats.paired_by_seed` of ``a`` and ``b`` (``diff = a − b``), with ``per_seed`` values."""
    result = paired_by_seed(a, b)
    return {**ident, **asdict(result), "seeds": list(result.seeds), "per_seed": [(s, a[s], b[s]) for s in result.seeds]}


def plain_variants(analysis: Analysis, method: str) -> list[str]:
    """Variants of ``method`` without a retention method."""
    return [v for v in analysis.variants
            if analysis.variant_method[v] == method and analysis.variant_retention[v] == NO_RETENTION]


def hypothesis_tests(analysis: Analysis, tuned: bool = False) -> list[dict[str, Any]]:
    """"Sequential beats joint" on :data:`HYPOTHESIS_METRICS`, ``diff = sequential − joint`` per seed: every plain
    sequential vs every plain joint variant or, ``tuned``, each sequential grid's tuned variant vs each joint grid's
    of the same retention method and knob."""
    grids = [c for c in analysis.grids if c.label in analysis.tuned]
    pairs = [(s.label, j.label, {"retention": s.retention}) for s in grids if s.method == "sequential" for j in grids
             if j.method == "joint" and (j.retention, j.key) == (s.retention, s.key)] if tuned else [
        (s, j, {}) for s in plain_variants(analysis, "sequential") for j in plain_variants(analysis, "joint")]
    get = analysis.seeds.get
    return [_paired_row(get(m, s), get(m, j), variant=s, reference=j, metric=m, **extra)
            for s, j, extra in pairs for m in HYPOTHESIS_METRICS]


def with_holm(rows: Sequence[dict[str, Any]], family: str) -> list[dict[str, Any]]:
    """``rows`` as one family of tests: each gains ``holm_pvalue`` (Holm-adjusted paired-t p), ``family`` and
    ``family_size`` (tests with a p-value), and the verdict of its CI *and* its adjusted p (:func:`~.stats.verdict`)."""
    adjusted = holm([r["t_pvalue"] for r in rows])
    size = int(np.isfinite(adjusted).sum())
    return [{**r, "holm_pvalue": float(p), "family": family, "family_size": size,
             "verdict": verdict(r["ci_low"], r["ci_high"], r["n"], pvalue=float(p))} for r, p in zip(rows, adjusted)]


def reference_comparisons(analysis: Analysis) -> list[dict[str, Any]]:
    """Every shown variant vs the pretrained baseline (the ``baseline`` block of its own jobs, else the per-seed
    baseline table) and vs each plain joint variant, ``diff = variant − reference`` (positive favours the variant)."""
    rows, get = [], analysis.seeds.get
    for variant in (v for v in analysis.shown if analysis.variant_method[v] != BASELINE_METHOD):
        for metric in COMPARISON_METRICS:
            base = get(f"baseline/{metric}", variant)
            if not base and metric in analysis.baseline:
                base = {int(s): float(v) for s, v in analysis.baseline[metric].dropna().items()}
            refs = [(analysis.baseline_label, base)] if base else []
            rows += [_paired_row(get(metric, variant), b, variant=variant, reference=ref, metric=metric) for ref, b
                     in refs + [(j, get(metric, j)) for j in plain_variants(analysis, "joint") if j != variant]]
    return rows


def selection_rule(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None) -> SelectionRule:
    """``rule``/``delta`` where given (the command line), else the finished jobs' ``selection`` config where they
    agree on it (without a command line they must: else a one-line :class:`SeqftError`), else conf/train.yaml's."""
    found: dict[tuple[str, float], list[str]] = {}
    for job in (j for j in jobs if j.ok):  # config.json holds the resolved `selection`
        found.setdefault((job.config["selection"]["rule"], float(job.config["selection"]["delta"])), []).append(job.rel)
    ran = "; ".join(f"{r}, delta={d:g} ({len(js)} job(s), e.g. {js[0]})" for (r, d), js in sorted(found.items()))
    cli = rule is not None or delta is not None
    if len(found) > 1 and not cli:
        raise SeqftError(f"the jobs of this sweep ran with different selection rules ({ran}): compare them under "
                         f"one rule with --rule {{{','.join(RULES)}}} --delta D, or compare the sweeps apart")
    agreed = [next(iter(values)) if len(values := {f[i] for f in found}) == 1 else default
              for i, default in enumerate(config_defaults())]  # what the command line leaves open
    chosen = (rule or agreed[0], float(delta if delta is not None else agreed[1]))
    try:
        check_rule(*chosen)
    except ValueError as err:
        cli_text = str(err).replace("selection.rule=", "--rule ").replace("selection.delta=", "--delta ")
        raise SeqftError(cli_text if cli else f"{err} (in the jobs' config)") from None
    if len(found) > 1:
        log.warning("the jobs ran with different selection rules (%s); compare applies %s, delta=%g", ran, *chosen)
    return SelectionRule(*chosen, f"the command line (--rule/--delta); the jobs ran with {ran}" if cli
                         else "the jobs' `selection` config")


def _chosen_value(value: Any) -> Any:
    return value if is_finite_number(value) else format_value(value)


def grid_edge(knob: str, value: Any, index: int, size: int) -> dict[str, Any]:
    """Where the chosen ``value`` (position ``index`` of ``size`` grid values, in candidate order) lies: ``edge``
    ``"low"``/``"high"`` (a grid of one is ``"low"``) when the best setting may lie beyond the grid, and the
    :data:`LIMIT_POINTS` text when that edge is the knob's natural end."""
    edge = "" if size < 1 else "low" if index == 0 else "high" if index == size - 1 else ""
    limit = next((why for key, limit, why in LIMIT_POINTS if key == knob and (
        math.isclose(value, limit, abs_tol=1e-12) if is_finite_number(value) and is_finite_number(limit)
        else format_value(value) == format_value(limit))), "")
    return {"on_edge": bool(edge), "edge": edge, "limit_point": limit if edge else ""}


def _choice_row(frame: pd.DataFrame, row: pd.Series, base: float, **ident: Any) -> dict[str, Any]:
    """A row of tuned.csv: ``ident``, the reference ``base``, the chosen job's calibration metrics of both parts (the
    estimation part's also of its baseline), test metrics and cost."""
    keys = [*SELECT_KEYS.values(), *ESTIMATION_METRICS, *(f"baseline/{c}" for c in ESTIMATION_METRICS),
            *HEADLINE_METRICS, *COST_KEYS, TRAIN_WALL, DEVICE]
    return {**ident, BASE_CAL_RETAINED: base, **{c: row[c] for c in keys}}


def tune_grids(frame: pd.DataFrame, grids: Sequence[KnobGrid], rule: SelectionRule) -> pd.DataFrame:
    """One row per knob grid and seed: what :func:`select` picks among the seed's finished grid points (in knob
    order, each as its final ``calibration/*`` acc, target and retained accuracy) against the seed's baseline
    calibration retained accuracy, with the whole grid's training cost."""
    rows, done = [], _done(frame)
    for grid in grids:
        for seed, group in done[done["variant"].isin(grid.variants)].groupby("seed"):
            # each grid point's first job, in knob order: a candidate when it has calibration metrics
            candidates = group.drop_duplicates("variant").sort_values("variant", key=lambda s: s.map(
                grid.variants.index)).dropna(subset=list(SELECT_KEYS.values()))
            if len(candidates) < len(group):
                log.warning("%s, seed %s: %d job(s) without calibration metrics or on a grid point twice; each "
                            "point's first job is its candidate", grid.label, seed, len(group) - len(candidates))
            base = float(candidates[BASE_CAL_RETAINED].iloc[0]) if len(candidates) else math.nan
            if candidates.empty or (rule.rule == "target_at_retained" and math.isnan(base)):
                continue
            chosen = select(candidates[list(SELECT_KEYS.values())].set_axis(list(SELECT_KEYS), axis=1).to_dict(
                "records"), base, rule.rule, rule.delta)  # what select reads: final calibration metrics only
            job = candidates.iloc[chosen.index]
            value = grid.values[grid.variants.index(job["variant"])]
            rows.append({**_choice_row(
                frame, job, base, variant=grid.label, kind="knob", knob=grid.key,
                grid=json.dumps([_chosen_value(v) for v in grid.values]), seed=int(seed), chosen=_chosen_value(value),
                fallback=bool(chosen.fallback), **grid_edge(grid.key, value, chosen.index, len(candidates)),
                n_candidates=len(candidates), job=job["job"], rule=rule.rule, delta=rule.delta),
                GRID_FLOPS: float(group[TRAIN_FLOPS].sum(min_count=1)),
                GRID_WALL: float(group[TRAIN_WALL].sum(min_count=1))})
    return pd.DataFrame(rows)


def merging_choices(jobs: Sequence[Job], frame: pd.DataFrame) -> pd.DataFrame:
    """The λ each counted merging job (``jobs``) chose in-run by the same rule on calibration, as rows of
    :func:`tune_grids` (its grid: the λ of its calibration.csv); task negation (its own rule) is left out."""
    by_job, rows = frame.set_index("job"), []
    for job in (j for j in jobs if j.method in MERGING_METHODS and j.method not in OWN_RULE_METHODS):
        if not is_finite_number(lam := job.metrics.get("lambda")):
            continue
        how, row = job.metrics.get("lambda_selection") or {}, by_job.loc[job.rel]
        grid = sorted(job.calibration["lambda"].dropna().tolist()) if job.calibration is not None else []
        at = int(np.argmin(np.abs(np.asarray(grid) - lam))) if grid else 0  # the grid point it chose
        rows.append(_choice_row(
            frame, row, row[BASE_CAL_RETAINED], variant=row["variant"], kind="merging (in-run)", knob="lambda",
            grid=json.dumps(grid), seed=int(job.seed), chosen=float(lam), fallback=bool(how.get("fallback", False)),
            **grid_edge("lambda", lam, at, len(grid)), n_candidates=len(grid), job=job.rel,
            rule=how.get("rule", ""), delta=how.get("delta", math.nan)))
    return pd.DataFrame(rows)


def baseline_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Per seed, the pretrained baseline as a row of its own (variant :data:`BASELINE_LABEL`, the ``baseline/*``
    columns of the seed's first counted job under their plain names): "do not fine-tune" as a candidate of
    :func:`best_method` in a sweep without jobs of the ``baseline`` method."""
    first = _done(frame).sort_values("job").groupby("seed", as_index=False).first()
    renamed = {c: c[len("baseline/"):] for c in first.columns if c.startswith("baseline/")}
    return first[["seed", "status", "excluded", *renamed]].rename(columns=renamed).assign(
        variant=BASELINE_LABEL, job=[f"(baseline of {j})" for j in first["job"]], method=BASELINE_METHOD,
        retention=NO_RETENTION)


def best_method(analysis: Analysis) -> dict[str, Any] | None:
    """:func:`select` over the pretrained baseline (first: a tie keeps "do not fine-tune") and the shown variants
    (not task negation), each as its mean final metrics over seeds on the selection part. The choice flatters its own
    numbers, so ``estimate`` is its mean on the estimation part and ``optimism`` the paired mean of estimation −
    selection (fractions; **negative: the selection part flattered it**); keys: ``acc``, ``acc_target``,
    ``acc_retained``."""
    base_label = next((v for v in analysis.shown if analysis.variant_method[v] == BASELINE_METHOD), BASELINE_LABEL)
    candidates = [base_label, *(v for v in analysis.shown
                                if analysis.variant_method[v] not in (BASELINE_METHOD, *OWN_RULE_METHODS))]
    table = [{"variant": v, **{k: analysis.seeds.mean(col, v) for k, col in SELECT_KEYS.items()}} for v in candidates]
    if not (table := [r for r in table if all(math.isfinite(r[k]) for k in SELECT_KEYS)]):
        return None
    done = _done(analysis.rows)
    per_seed = done[done["variant"].isin([r["variant"] for r in table])].groupby("seed")[BASE_CAL_RETAINED].mean()
    base, (rule, delta) = float(per_seed.dropna().mean()), (analysis.selection.rule, analysis.selection.delta)
    if rule == "target_at_retained" and not math.isfinite(base):
        return None
    chosen = select(table, base, rule, delta)
    for r in table:
        r["qualifies"] = rule == "overall" or r["acc_retained"] >= base - delta - 1e-12
    v, get = table[chosen.index]["variant"], analysis.seeds.get
    return {"variant": v, "fallback": chosen.fallback, "baseline_retained": base, "candidates": table,
            "selected": {k: table[chosen.index][k] for k in SELECT_KEYS},
            "estimate": {k: analysis.seeds.mean(col, v) for k, col in ESTIMATE_KEYS.items()},
            "optimism": {k: paired_by_seed(get(ESTIMATE_KEYS[k], v), get(col, v)).mean_diff
                         for k, col in SELECT_KEYS.items()},
            "n_estimate": min(len(get(col, v)) for col in ESTIMATE_KEYS.values())}


def cost_table(analysis: Analysis) -> pd.DataFrame:
    """Per shown variant: n seeds, the mean over seeds of each numeric ``cost/*`` (tuned: of the chosen jobs, plus
    the mean over seeds of the whole grid's training cost) and the devices the jobs ran on."""
    used = analysis.rows[_used(analysis.rows)]
    grid = analysis.choices.groupby("variant")[[GRID_FLOPS, GRID_WALL]].mean() if GRID_FLOPS in analysis.choices \
        else pd.DataFrame(columns=[GRID_FLOPS, GRID_WALL], dtype=float)
    devices = used.groupby("variant")[DEVICE].agg(lambda ds: ", ".join(sorted(set(ds.dropna()) - {""})))
    table = [{"variant": v, "n": int(used.loc[used["variant"] == v, "seed"].nunique()),
              **{c: analysis.seeds.mean(c, v) for c in (*COST_KEYS, TRAIN_WALL)}, DEVICE: devices.get(v, "")}
             for v in analysis.shown]
    return pd.DataFrame(table, columns=["variant", "n", *COST_KEYS, TRAIN_WALL, DEVICE]).join(grid, on="variant")


def analyse(jobs: Sequence[Job], rule: str | None = None, delta: float | None = None,
            include_diverged: bool = False) -> Analysis:
    """The full :class:`Analysis` of a sweep; ``rule``/``delta`` override the jobs' selection rule;
    ``include_diverged`` lets diverged runs into the statistics."""
    jobs = list(jobs)
    labels = dict(zip([j.rel for j in jobs], variant_labels([j.config for j in jobs])))
    classes = task_classes_of(jobs)
    frame = jobs_frame(jobs, labels, classes, include_diverged)
    done = [j for j in jobs if counted(j, include_diverged)]
    info = {labels[j.rel]: (j.method, j.retention) for j in done}
    selection = selection_rule(jobs, rule, delta)
    grids = knob_grids({v: next(j.config for j in done if labels[j.rel] == v) for v in info})
    flat = {j.rel: flatten(j.config) for j in jobs}
    for key in dict.fromkeys(c.key for c in grids):  # the knob columns: the job's value where it has that key
        frame[key] = [_chosen_value(flat[rel][key]) if key in flat[rel] else None for rel in frame["job"]]
    knob = tune_grids(frame, grids, selection)
    choices = pd.concat([knob, merging_choices(done, frame)], ignore_index=True)
    tuned_info = {c.label: (c.method, c.retention) for c in grids if c.label in set(knob.get("variant", []))}
    chosen_by = {} if knob.empty else knob.groupby("job")["variant"].agg(lambda v: "; ".join(sorted(set(v))))
    frame["chosen_for"] = [chosen_by.get(rel, "") for rel in frame["job"]]
    # frame plus each tuned variant's chosen job rows under the tuned label
    rows = frame if knob.empty else pd.concat([frame, frame.set_index("job").loc[knob["job"].tolist()].reset_index()
                                               .assign(variant=knob["variant"].tolist())], ignore_index=True)
    in_tuned_grid = {v for c in grids if c.label in tuned_info for v in c.variants}
    all_info = {**info, **tuned_info}
    baseline, source = baseline_per_seed(done, frame, classes)
    has_baseline_method = any(m == BASELINE_METHOD for m, _ in info.values())
    metrics = ["test/acc", "test/precision", "test/recall", "test/f1", *map(class_metric, classes), CLASS_MEAN,
               TARGET, RETAINED, *(m for m in ("cl/forgetting", "cl/bwt") if frame[m].notna().any())]
    if not has_baseline_method:
        rows = pd.concat([rows, baseline_rows(frame)], ignore_index=True)  # the "don't fine-tune" candidate
    seeds = SeedTable(rows)
    analysis = Analysis(
        jobs=jobs, labels=labels, frame=frame, task_classes=classes, variants=order_variants(info),
        variant_method={v: m for v, (m, _) in all_info.items()},
        variant_retention={v: r for v, (_, r) in all_info.items()}, baseline=baseline,
        baseline_label="baseline" if has_baseline_method else BASELINE_LABEL, baseline_source=source,
        table_metrics=metrics, summary=summary_table(seeds, order_variants(all_info), metrics,
                                                     None if has_baseline_method else baseline),
        selection=selection, grids=grids, tuned=order_variants(tuned_info), choices=choices,
        shown=order_variants({v: all_info[v] for v in all_info if v not in in_tuned_grid}), rows=rows, seeds=seeds,
        include_diverged=include_diverged)
    naive, tuned = hypothesis_tests(analysis), hypothesis_tests(analysis, tuned=True)
    family = with_holm([*naive, *tuned], "every sequential-vs-joint test")  # one family: every test shown
    analysis.hypothesis, analysis.tuned_hypothesis = family[:len(naive)], family[len(naive):]
    analysis.comparisons = with_holm(reference_comparisons(analysis), "every variant-vs-reference comparison")
    analysis.best = best_method(analysis)
    return analysis
