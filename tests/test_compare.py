"""Tests of ``seqft_lightning.compare`` on small hand-made sweep folders.

Expected statistics are written out by hand (t quantiles: t_{0.975,2} = 4.302652729749462), and so
are the knob values the selection rule must pick in the hand-made study (:data:`EXPECTED_CHOICE`).
"""

from __future__ import annotations

import json
import shutil
import logging
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from seqft_lightning.compare import aggregate as agg
from seqft_lightning.compare import cli, plots
from seqft_lightning.compare.load import load_job, load_jobs, newest_sweep_dir
from seqft_lightning.compare.report import cell, pvalue
from seqft_lightning.compare.stats import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, paired_by_seed, t_errorbar,
                                           t_interval, verdict)
from seqft_lightning.compare.variants import retention_name, variant_family, variant_labels
from seqft_lightning.contract import (CALIBRATION_FILE, CONFIG_FILE, CURVES_FILE, LAMBDA_TEST_FILE, METRICS_FILE,
                                      STAGE_COLUMNS, STAGES_FILE, ERROR_FILE, confusion_file)
from seqft_lightning.errors import EXIT_USER_ERROR, SeqftError

ROOT = Path(__file__).resolve().parents[1]
TASK = (3, 4, 7)
T_975_DF2 = 4.302652729749462


# --------------------------------------------------------------------------- synthetic run folders

def metric_dict(acc: float, target: float, retained: float,
                cal: tuple[float, float, float] | None = None) -> dict[str, float]:
    """Flat test metrics; task classes 3/4/7 = target+0.01/target-0.01/target (mean = target).

    ``cal`` = calibration ``(acc, target, retained)`` (default: the test numbers)."""
    d = {"test/acc": acc, "test/precision": acc - 0.01, "test/recall": acc - 0.02, "test/f1": acc - 0.015,
         "test/loss": 1.0 - acc, "test/acc_target": target, "test/acc_retained": retained}
    for k in range(10):
        d[f"test/acc_class_{k}"] = retained
    d["test/acc_class_3"], d["test/acc_class_4"], d["test/acc_class_7"] = target + 0.01, target - 0.01, target
    cal_acc, cal_target, cal_retained = cal or (acc, target, retained)
    d.update({"calibration/acc": cal_acc, "calibration/acc_target": cal_target,
              "calibration/acc_retained": cal_retained, "calibration/precision": cal_acc - 0.01})
    for k in range(10):
        d[f"calibration/acc_class_{k}"] = cal_retained
    return d


def make_config(method: str, stages: list, seed: int, retention: str | None = None, **extra) -> dict:
    cfg = {
        "seed": seed,
        "method": {"name": method, "stages": stages},
        "trainer": {"max_epochs": 2, "accelerator": "cpu", "devices": 1,
                    "enable_progress_bar": seed == 1},                # console switch: must not matter
        "paths": {"output_dir": f"/runs/{method}/{seed}"},            # nor paths
        "data": {"data_dir": f"/data/{seed}"},                        # nor any *_dir
        "optimizer": {"lr": 0.01},
        "logger": {"csv": {"save_dir": f"/runs/{seed}"}},
        # the pipeline's no-op class is retention=none
        "retention": {"_target_": f"seqft_lightning.retention.{retention or 'Retention'}"},
        "selection": {"rule": "target_at_retained", "delta": 0.01},
    }
    if retention is not None:
        cfg["retention"]["strength"] = 100.0
    cfg["resume"] = seed == 2  # operational switch, must not split a variant
    for key, value in extra.items():
        cfg[key] = value
    return cfg


def job_cost(cfg: dict) -> tuple[dict[str, float], dict[str, object]]:
    """Deterministic ``cost/*`` of metrics.json and the run_info.json entries of a hand-made job:
    100 samples and 10 optimizer steps per stage, 1e6 FLOPs per stage (2e6 with retention)."""
    stages = len(cfg["method"]["stages"]) if cfg["method"]["name"] != "baseline" else 0
    retention = retention_name(cfg) != "none"
    train = 1e6 * stages * (2 if retention else 1)
    cost = {"cost/optimizer_steps": 10 * stages, "cost/train_samples": 100 * stages, "cost/train_flops": train,
            "cost/eval_flops": 1e5, "cost/total_flops": train + 1e5,
            "cost/extra_memory_bytes": 4096 if retention else 0, "cost/pretrain_steps": 50}
    return cost, {"cost/train_wall_s": 0.5 * stages, "cost/device": "cpu", "device": "cpu"}


def write_job(job_dir: Path, cfg: dict, final: dict | None = None, baseline: dict | None = None,
              lam: float | None = None, error: str | None = None) -> Path:
    """One job dir following the run-folder contract; ``final=None`` -> no metrics.json (failed with ``error``, else
    unfinished)."""
    job_dir.mkdir(parents=True)
    (job_dir / CONFIG_FILE).write_text(json.dumps(cfg))
    if error is not None:  # what the sweep callback writes for a crash
        (job_dir / ERROR_FILE).write_text(json.dumps({"error": error, "exit_status": 1}))
    if final is None:
        return job_dir
    stages = cfg["method"]["stages"]
    T = len(stages)
    per_stage = [metric_dict(final["test/acc"] - 0.01 * (T - k), final["test/acc_target"],
                             final["test/acc_retained"] + 0.01 * (T - k)) for k in range(1, T)] + [final] * (T > 0)
    cost, run_info = job_cost(cfg)
    metrics = {"method": cfg["method"]["name"], "seed": cfg["seed"], "stages": stages,
               "task_classes": sorted({c for stage in stages for c in stage}), "retention": retention_name(cfg),
               "baseline": baseline, "final": {**final, "calibration/selection_score": final["calibration/acc_target"]},
               "per_stage": per_stage, "cost": cost, "retention_inactive": None}
    (job_dir / "run_info.json").write_text(json.dumps(run_info))
    if lam is not None:
        metrics["lambda"] = lam
        metrics["lambda_selection"] = {"rule": "target_at_retained", "delta": 0.01, "fallback": False,
                                       "split": "calibration"}
    rows = []
    for stage, d in enumerate([baseline, *per_stage]):
        trained = "pretrain" if stage == 0 else "+".join(map(str, stages[stage - 1]))
        rows.append([stage, trained, "all", d["test/acc"], d["test/precision"], d["test/recall"],
                     d["test/f1"], d["test/loss"], None])
        rows.append([stage, trained, "target", d["test/acc_target"], None, None, None, None, None])
        rows.append([stage, trained, "retained", d["test/acc_retained"], None, None, None, None, None])
        for k in range(10):
            rows.append([stage, trained, f"class_{k}", d[f"test/acc_class_{k}"], None, None, None, None, None])
    pd.DataFrame(rows, columns=list(STAGE_COLUMNS)).to_csv(job_dir / STAGES_FILE, index=False)
    curves, step = [], 0
    for stage in range(T + 1):
        for epoch in range(2):
            for _ in range(3):
                step += 10
                curves.append([stage, epoch, step, "train", "loss", 1.0 / (1 + step / 50)])
            curves.append([stage, epoch, step, "val", "acc", 0.8 + 0.01 * stage + 0.005 * epoch])
    pd.DataFrame(curves, columns=["stage", "epoch", "step", "split", "metric", "value"]).to_csv(
        job_dir / CURVES_FILE, index=False)
    (job_dir / confusion_file(0)).parent.mkdir()
    for stage in range(T + 1):
        mat = np.full((10, 10), 1, dtype=int) + np.eye(10, dtype=int) * (80 + stage)
        pd.DataFrame(mat, columns=[f"pred_{k}" for k in range(10)],
                     index=pd.Index(range(10), name="true")).to_csv(job_dir / confusion_file(stage))
    if lam is not None:
        lams = np.linspace(0, 1, 5)
        pd.DataFrame({"lambda": lams, "acc": 0.8 + 0.05 * lams, "acc_target": 0.5 + 0.4 * lams,
                      "acc_retained": 0.98 - 0.1 * lams}).to_csv(job_dir / CALIBRATION_FILE, index=False)
        pd.DataFrame({"lambda": lams, "acc": 0.79 + 0.05 * lams, "acc_target": 0.49 + 0.4 * lams,
                      "acc_retained": 0.97 - 0.1 * lams}).to_csv(job_dir / LAMBDA_TEST_FILE, index=False)
    (job_dir / METRICS_FILE).write_text(json.dumps(metrics))
    return job_dir


# Crafted headline numbers per seed (fractions).
SEQ_TARGET = {0: 0.92, 1: 0.94, 2: 0.93}
JOINT_TARGET = {0: 0.90, 1: 0.91, 2: 0.905}      # seq − joint = 0.02, 0.03, 0.025 -> CI > 0
SEQ_ACC = {0: 0.95, 1: 0.96, 2: 0.94}
JOINT_ACC = {0: 0.955, 1: 0.95, 2: 0.945}        # seq − joint = −0.005, 0.01, −0.005 -> CI spans 0
BASE = {s: metric_dict(0.90, 0.88, 0.91) for s in range(3)}


def build_sweep(root: Path) -> Path:
    sweep = root / "outputs" / "multirun" / "2024-01-01_00-00-00"
    sweep.mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    i = 0

    def nxt() -> Path:
        nonlocal i
        i += 1
        return sweep / str(i - 1)

    for s in range(3):
        write_job(nxt(), make_config("sequential", [[3], [4], [7]], s),
                  metric_dict(SEQ_ACC[s], SEQ_TARGET[s], 0.96), BASE[s])
        write_job(nxt(), make_config("joint", [[3, 4, 7]], s),
                  metric_dict(JOINT_ACC[s], JOINT_TARGET[s], 0.97), BASE[s])
    for s in range(2):
        write_job(nxt(), make_config("sequential", [[7], [4], [3]], s), metric_dict(0.93, 0.91, 0.95), BASE[s])
        ewc_final = metric_dict(0.955, 0.90, 0.975)
        ewc_final.update({"cl/forgetting": 0.01 * (s + 1), "cl/bwt": -0.01 * (s + 1), "cl/avg_acc": 0.9})
        write_job(nxt(), make_config("sequential", [[3], [4], [7]], s, retention="EWC"), ewc_final, BASE[s])
        write_job(nxt(), make_config("task_arithmetic", [[3], [4], [7]], s), metric_dict(0.94, 0.85, 0.97),
                  BASE[s], lam=0.5)
    # failed job: config and error.json, no metrics.json
    write_job(nxt(), make_config("sequential", [[3], [4], [7]], 2, retention="EWC"),
              error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB")
    return sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def analysis(sweep: Path) -> agg.Analysis:
    return agg.analyse(load_jobs(sweep))


@pytest.fixture(scope="module")
def compared(sweep: Path) -> Path:
    """Run the whole CLI once; returns the compare/ folder."""
    assert cli.main([str(sweep)]) == 0
    return sweep / "compare"


def user_error_exit(argv: list[str]) -> int:
    """Exit status of ``cli.main(argv)``, which must exit (bad input)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    return exited.value.code


# --------------------------------------------------------------------------- stats

def paired_arrays(a: list[float], b: list[float]):
    """:func:`paired_by_seed` of two aligned lists (seed = position)."""
    return paired_by_seed(dict(enumerate(a)), dict(enumerate(b)))


def test_t_interval_matches_hand_computation():
    s = t_interval([0.92, 0.94, 0.93])
    # mean 0.93, std (ddof=1) 0.01, half width t * 0.01 / sqrt(3) = 0.0248414...
    assert s.n == 3
    assert s.mean == pytest.approx(0.93)
    assert s.std == pytest.approx(0.01)
    assert s.ci_low == pytest.approx(0.93 - T_975_DF2 * 0.01 / math.sqrt(3))
    assert s.ci_low == pytest.approx(0.9051586, abs=1e-7)
    assert s.ci_high == pytest.approx(0.9548414, abs=1e-7)


def test_t_interval_small_samples():
    one = t_interval([0.5])
    assert one.n == 1 and one.mean == 0.5 and math.isnan(one.std) and math.isnan(one.ci_low)
    assert t_interval([]).n == 0
    assert t_interval([0.5, float("nan"), 0.7]).n == 2  # NaNs dropped


@pytest.mark.parametrize(("ci", "n", "expected"), [
    ((0.01, 0.03), 3, SUPPORTED),
    ((-0.03, -0.01), 5, NOT_SUPPORTED),
    ((-0.01, 0.02), 5, INCONCLUSIVE),      # CI spans 0
    ((0.01, 0.03), 2, INCONCLUSIVE),       # too few seeds even though CI > 0
    ((0.0, 0.03), 4, INCONCLUSIVE),        # touching 0 is not "entirely above"
    ((math.nan, math.nan), 4, INCONCLUSIVE),
])
def test_verdict_rule(ci, n, expected):
    assert verdict(*ci, n) == expected


def test_paired_verdicts_on_crafted_data():
    sup = paired_by_seed(SEQ_TARGET, JOINT_TARGET)
    # diffs 0.02, 0.03, 0.025: mean 0.025, std 0.005, half width t*0.005/sqrt(3) = 0.0124207...
    assert sup.n == 3 and sup.seeds == (0, 1, 2)
    assert sup.mean_diff == pytest.approx(0.025)
    assert sup.ci_low == pytest.approx(0.025 - 0.0124207, abs=1e-6)
    assert sup.ci_high == pytest.approx(0.025 + 0.0124207, abs=1e-6)
    assert sup.verdict == SUPPORTED
    assert sup.t_pvalue < 0.05
    # exact, n=3, all positive: p = 2/2^3 = 0.25 at best, so no Wilcoxon p-value is reported
    assert math.isnan(sup.wilcoxon_pvalue) and sup.wilcoxon_note == "n = 3 cannot reach p < 0.05"

    worse = paired_arrays([0.80, 0.81, 0.82], [0.90, 0.92, 0.91])
    assert worse.mean_diff == pytest.approx(-0.10)
    assert worse.verdict == NOT_SUPPORTED

    span = paired_by_seed(SEQ_ACC, JOINT_ACC)
    assert span.mean_diff == pytest.approx(0.0, abs=1e-12)
    assert span.ci_low < 0 < span.ci_high
    assert span.verdict == INCONCLUSIVE

    few = paired_by_seed({0: 0.9, 1: 0.95}, {0: 0.8, 1: 0.82, 2: 0.7})  # only 2 shared seeds
    assert few.n == 2 and few.verdict == INCONCLUSIVE


def test_paired_degenerate_cases():
    zero = paired_arrays([0.9, 0.8, 0.7], [0.9, 0.8, 0.7])
    assert zero.mean_diff == 0 and zero.t_pvalue == 1.0 and math.isnan(zero.wilcoxon_pvalue)
    assert zero.wilcoxon_note == "every difference is 0"
    assert zero.verdict == INCONCLUSIVE
    single = paired_arrays([0.9], [0.8])
    assert single.n == 1 and math.isnan(single.t_pvalue) and single.verdict == INCONCLUSIVE
    none = paired_by_seed({}, {0: 0.5})
    assert none.n == 0 and math.isnan(none.mean_diff) and none.verdict == INCONCLUSIVE


# --------------------------------------------------------------------------- variants

def test_variant_labels():
    cfgs = [
        make_config("sequential", [[3], [4], [7]], 0),
        make_config("sequential", [[3], [4], [7]], 1),      # same variant, other seed/devices/paths
        make_config("sequential", [[7], [4], [3]], 0),      # other stage order
        make_config("joint", [[3, 4, 7]], 0),
        make_config("joint", [[3, 4, 7]], 1),
        make_config("sequential", [[3], [4], [7]], 0, retention="EWC"),
    ]
    labels = variant_labels(cfgs)
    assert labels[0] == labels[1] == "sequential method.stages=[[3],[4],[7]]"
    assert labels[2] == "sequential method.stages=[[7],[4],[3]]"
    assert labels[3] == labels[4] == "joint"
    assert labels[5] == "sequential+ewc"
    assert len(set(labels)) == 4


def test_variant_is_defined_by_contract_rule_accelerator_counts_seed_does_not():
    cpu = make_config("joint", [[3, 4, 7]], 0)
    gpu = make_config("joint", [[3, 4, 7]], 1)
    gpu["trainer"]["accelerator"] = "gpu"  # contract.affects_results: a GPU run is another variant
    other_lr = make_config("joint", [[3, 4, 7]], 2)
    other_lr["optimizer"]["lr"] = 0.1
    labels = variant_labels([cpu, make_config("joint", [[3, 4, 7]], 1), gpu, other_lr])
    assert labels[0] == labels[1]  # seed, paths, data_dir, resume, progress bar differ: one variant
    assert labels[2] == "joint optimizer.lr=0.01 trainer.accelerator=gpu"
    assert labels[3] == "joint optimizer.lr=0.1 trainer.accelerator=cpu"
    assert labels[0] == "joint optimizer.lr=0.01 trainer.accelerator=cpu"


@pytest.mark.parametrize(("method", "retention", "family"), [
    ("baseline", "none", "naive"), ("sequential", "none", "naive"), ("joint", "none", "naive"),
    ("sequential", "ewc", "retention"), ("joint", "replay", "retention"),
    ("task_arithmetic", "none", "merging"), ("ties", "none", "merging"), ("dare", "none", "merging"),
    ("average", "none", "merging"), ("task_negation", "none", "merging"),
])
def test_variant_family(method, retention, family):
    assert variant_family(method, retention) == family


def test_variant_labels_hyperparameter_and_retention_names():
    a = make_config("sequential", [[3], [4], [7]], 0, retention="EWC")
    b = make_config("sequential", [[3], [4], [7]], 0, retention="EWC")
    b["retention"]["strength"] = 10.0
    assert variant_labels([a, b]) == ["sequential+ewc retention.strength=100.0",
                                      "sequential+ewc retention.strength=10.0"]
    assert retention_name({}) == "none"
    assert retention_name({"retention": {"_target_": "seqft_lightning.retention.Retention"}}) == "none"
    assert retention_name({"retention": {"_target_": "seqft_lightning.retention.LwF"}}) == "lwf"
    assert retention_name({"retention": {"_target_": "x.L2SP"}}) == "l2sp"
    assert retention_name({"retention": {"_target_": "x.NoRetention"}}) == "noretention"  # no legacy aliases


# --------------------------------------------------------------------------- loading and aggregation

def test_load_marks_failed_job(sweep: Path):
    jobs = load_jobs(sweep)
    assert len(jobs) == 13
    failed = [j for j in jobs if not j.ok]
    assert [j.rel for j in failed] == ["12"]
    assert failed[0].status == "failed"
    assert "RuntimeError: CUDA out of memory" in failed[0].reason


def test_load_logs_one_info_line_and_debug_per_job(sweep: Path, caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.DEBUG, logger="seqft_lightning.compare"):
        load_jobs(sweep)
    by_level = lambda level: [r.getMessage() for r in caplog.records if r.levelno == level]  # noqa: E731
    assert by_level(logging.INFO) == ["read 13 jobs (1 failed)"]
    assert by_level(logging.WARNING) == ["job 12: failed, RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"]
    debug = [m for m in by_level(logging.DEBUG) if m.startswith("read ")]  # -v: one line per job read
    assert len(debug) == 13 and "read 12: failed, method " in " ".join(debug)


def test_job_without_stages_csv_has_no_stage_table(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    job_dir = write_job(tmp_path / "sweep" / "0", make_config("joint", [[3, 4, 7]], 0),
                        metric_dict(0.9, 0.9, 0.9), BASE[0])
    (job_dir / STAGES_FILE).unlink()
    with caplog.at_level(logging.WARNING, logger="seqft_lightning.compare"):
        (job,) = load_jobs(tmp_path / "sweep")
    assert job.ok and job.stages is None and job.curves is not None
    assert job.confusion_stage == 1 and job.confusion[0, 0] == 1 + 80 + 1  # stage 1, not stage 0
    assert any(STAGES_FILE in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_unfinished_job_and_runs_without_config_json(tmp_path: Path):
    write_job(tmp_path / "sweep" / "0", make_config("joint", [[3, 4, 7]], 0))
    job = load_job(tmp_path / "sweep" / "0", tmp_path / "sweep")
    assert job.status == "unfinished" and "no metrics.json" in job.reason
    with pytest.raises(SeqftError, match="^no job of .* has finished"):
        load_jobs(tmp_path / "sweep")
    old = tmp_path / "sweep" / "1" / ".hydra"  # a run written before config.json: refused in one line
    old.mkdir(parents=True)
    (old / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(SeqftError, match=r"1 has no config.json: it was written by an older seqft-lightning"):
        load_jobs(tmp_path / "sweep")


def test_newest_sweep_uses_mtime_not_name(tmp_path: Path):
    assert newest_sweep_dir(tmp_path / "missing") is None
    older, newer = tmp_path / "outputs" / "multirun" / "zzz", tmp_path / "outputs" / "multirun" / "aaa"
    for i, sweep in enumerate((older, newer)):
        write_job(sweep / "0", make_config("joint", [[3, 4, 7]], 0))
        (sweep / "multirun.yaml").write_text("{}\n")
        os.utime(sweep / "multirun.yaml", (1_000_000 + i, 1_000_000 + i))
    assert newest_sweep_dir(tmp_path / "outputs") == newer
    assert newest_sweep_dir(tmp_path / "outputs" / "multirun") == newer


def test_aggregated_means_stds_and_cis(analysis: agg.Analysis):
    seq = "sequential method.stages=[[3],[4],[7]]"
    assert set(analysis.variants) == {seq, "sequential method.stages=[[7],[4],[3]]", "joint",
                                      "sequential+ewc", "task_arithmetic"}
    assert analysis.task_classes == [3, 4, 7]
    row = analysis.summary.set_index(["variant", "metric"]).loc[(seq, "test/acc_target")]
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(0.93)
    assert row["std"] == pytest.approx(0.01)
    assert row["ci_low"] == pytest.approx(0.9051586, abs=1e-7)
    assert row["ci_high"] == pytest.approx(0.9548414, abs=1e-7)
    joint = analysis.summary.set_index(["variant", "metric"]).loc[("joint", "test/acc")]
    # 0.955, 0.95, 0.945: mean 0.95, std 0.005
    assert joint["mean"] == pytest.approx(0.95) and joint["std"] == pytest.approx(0.005)
    ewc = analysis.summary.set_index(["variant", "metric"]).loc[("sequential+ewc", "cl/forgetting")]
    # 0.01, 0.02 (the failed seed-2 job is excluded): mean 0.015, std 0.0070711, t_{0.975,1} = 12.7062
    assert ewc["n"] == 2
    assert ewc["mean"] == pytest.approx(0.015)
    assert ewc["std"] == pytest.approx(0.0070710678)
    assert ewc["ci_high"] == pytest.approx(0.015 + 12.7062047 * 0.005, abs=1e-6)
    # class mean of the task classes = target (3: +0.01, 4: −0.01, 7: ±0)
    cm = analysis.summary.set_index(["variant", "metric"]).loc[(seq, agg.CLASS_MEAN)]
    assert cm["mean"] == pytest.approx(0.93)
    base = analysis.summary.set_index(["variant", "metric"]).loc[(agg.BASELINE_LABEL, "test/acc")]
    assert base["n"] == 3 and base["mean"] == pytest.approx(0.90) and base["std"] == pytest.approx(0.0)


def test_hypothesis_results(analysis: agg.Analysis):
    # both plain stage orders of sequential are tested against joint, on 2 metrics each
    assert {(r["variant"], r["reference"]) for r in analysis.hypothesis} == {
        ("sequential method.stages=[[3],[4],[7]]", "joint"), ("sequential method.stages=[[7],[4],[3]]", "joint")}
    by_metric = {r["metric"]: r for r in analysis.hypothesis
                 if r["variant"] == "sequential method.stages=[[3],[4],[7]]"}
    assert set(by_metric) == {"test/acc_target", "test/acc"}
    # the CI is above 0 (raw paired t p = 0.0131), but Holm over the family of 4 sequential-vs-joint tests (2 pairs x
    # 2 metrics) multiplies the smallest p by 4: 0.0524 >= 0.05, so inconclusive
    target = by_metric["test/acc_target"]
    assert target["ci_low"] > 0 and target["t_pvalue"] == pytest.approx(0.01307, abs=1e-5)
    assert target["family_size"] == 4 and target["holm_pvalue"] == pytest.approx(4 * target["t_pvalue"])
    assert target["verdict"] == INCONCLUSIVE
    assert target["mean_diff"] == pytest.approx(0.025)
    assert by_metric["test/acc"]["verdict"] == INCONCLUSIVE
    # vs baseline: sequential target 0.93 vs 0.88 in every seed
    vs_base = [r for r in analysis.comparisons if r["reference"] == agg.BASELINE_LABEL
               and r["variant"] == "task_arithmetic" and r["metric"] == "test/acc_target"]
    assert len(vs_base) == 1 and vs_base[0]["n"] == 2 and vs_base[0]["mean_diff"] == pytest.approx(-0.03)
    assert vs_base[0]["verdict"] == INCONCLUSIVE  # only two seeds


# --------------------------------------------------------------------------- outputs

def test_the_answer_says_when_the_sweep_is_incomplete(compared: Path):
    answer = (compared / "report.md").read_text().split("## Answer", 1)[1].split("**Best method", 1)[0]
    assert "Incomplete sweep: 1 of 13 job dir(s) did not finish (1 failed, 0 unfinished)" in answer


def test_a_job_with_an_unreadable_json_file_fails_alone(sweep: Path, tmp_path: Path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    job = next(p.parent for p in sorted(copy.rglob(METRICS_FILE)))
    (job / METRICS_FILE).write_text('{"method": ')  # truncated
    jobs = {j.rel: j for j in load_jobs(copy)}
    bad = jobs[job.relative_to(copy).as_posix()]
    assert bad.status == "failed" and bad.reason.startswith(f"{METRICS_FILE} is unreadable") and bad.config
    assert sum(j.ok for j in jobs.values()) == sum(j.ok for j in load_jobs(sweep)) - 1


def test_an_incomplete_stages_csv_is_left_out_with_a_warning(sweep: Path, tmp_path: Path):
    copy = tmp_path / "sweep"
    shutil.copytree(sweep, copy)
    job = next(p.parent for p in sorted(copy.rglob(STAGES_FILE)) if (p.parent / METRICS_FILE).is_file())
    lines = (job / STAGES_FILE).read_text().splitlines(keepends=True)
    (job / STAGES_FILE).write_text("".join(lines[:-2]))  # the last stage's rows cut short
    read = {j.rel: j for j in load_jobs(copy)}[job.relative_to(copy).as_posix()]
    assert read.ok and read.stages is None and any(f"{STAGES_FILE} is incomplete" in w for w in read.warnings)


def test_outputs_written(compared: Path):
    csv = pd.read_csv(compared / "summary.csv")
    assert len(csv) == 13
    assert set(csv["status"]) == {"ok", "failed"}
    for col in ("test/acc", "test/precision", "test/recall", "test/f1", "test/acc_target", "test/acc_retained",
                "test/acc_class_3", "test/acc_class_4", "test/acc_class_7", "cl/forgetting", "cl/bwt", "lambda"):
        assert col in csv.columns, col
    assert "test/acc_class_0" not in csv.columns  # only task classes are published
    assert not list(compared.glob(".*.tmp"))     # atomic writes leave no temp files

    summary = (compared / "summary.md").read_text()
    assert "93.00 ± 1.00 [90.52, 95.48]" in summary  # sequential target, percent
    assert agg.BASELINE_LABEL in summary

    hyp = (compared / "hypothesis.md").read_text()
    seq, rev = "`sequential method.stages=[[3],[4],[7]]` vs `joint`", "`sequential method.stages=[[7],[4],[3]]` vs"
    assert f"- {seq}, target acc (pooled): **inconclusive**" in hyp  # CI > 0, but Holm p = 0.0523 (family of 4)
    assert "Holm p = 0.0523 (family of 4)" in hyp and "Wilcoxon n/a (n = 3 cannot reach p < 0.05)" in hyp
    assert f"- {seq}, accuracy: **inconclusive**" in hyp
    assert f"- {rev} `joint`, target acc (pooled): **inconclusive**" in hyp  # other stage order: 2 seeds only
    assert "+2.50" in hyp  # mean difference sequential − joint, pp
    assert "p = <" not in hyp and "paired t p = 0.0131" in hyp  # t_{2} test of diffs 0.02, 0.03, 0.025


def test_pvalue_formatting():
    assert pvalue(0.0004) == "p < 0.001"
    assert pvalue(0.01234) == "p = 0.0123"
    assert pvalue(0.25) == "p = 0.25"
    assert pvalue(math.nan) == "p = n/a"
    assert pvalue(1e-9, "") == "< 0.001"
    assert pvalue(0.049, "") == "0.049"


def test_ci_of_accuracies_is_clipped_in_tables_not_for_differences(tmp_path: Path):
    for seed, target in enumerate((0.99, 0.90)):  # mean 0.945, raw CI [0.373, 1.517]
        write_job(tmp_path / "s" / str(seed), make_config("joint", [[3, 4, 7]], seed),
                  metric_dict(0.9, target, 0.9), BASE[seed])
    analysis = agg.analyse(load_jobs(tmp_path / "s"))
    row = analysis.summary.set_index(["variant", "metric"]).loc[("joint", "test/acc_target")]
    half = 12.7062047 * math.sqrt(0.5 * 0.09 ** 2) / math.sqrt(2)  # t_{0.975,1} * std / sqrt(n)
    assert row["mean"] == pytest.approx(0.945)
    assert row["ci_low"] == pytest.approx(0.945 - half, abs=1e-6)
    assert 0.945 + half > 1 and row["ci_high"] == 1.0
    assert cell(row).endswith(f"[{100 * (0.945 - half):.2f}, 100.00]")
    # the same numbers as a paired difference are not clipped
    assert paired_by_seed({0: 1.99, 1: 1.90}, {0: 1.0, 1: 1.0}).ci_high == pytest.approx(0.945 + half, abs=1e-6)
    # plots use the same helper: seaborn's errorbar callable, in percent
    assert t_errorbar((0, 100))([99.0, 90.0]) == pytest.approx((100 * (0.945 - half), 100.0))


def test_plots_written(compared: Path):
    plots = compared / "plots"
    expected = ["tradeoff.png", "accuracy_vs_compute.png", "stage_trend.png", "class_heatmap.png",
                "training_curves.png", "calibration.png", "headline_bars.png", "confusion.png"]
    # what each figure draws: tests/test_plots.py
    assert sorted(p.name for p in plots.glob("*.png")) == sorted(expected)  # one confusion grid, not one per variant


def test_report_mentions_failed_job_and_embeds_plots(compared: Path):
    md = (compared / "report.md").read_text()
    assert "could not act" not in md  # no retention_inactive run in this sweep
    html = (compared / "report.html").read_text()
    for text in (md, html):
        assert "RuntimeError: CUDA out of memory" in text
        assert "failed" in text
    assert md.index("## Answer") < md.index("### Verdict") < md.index("## Summary over seeds") < md.index("## Plots")
    assert "](plots/stage_trend.png)" in md
    assert html.count("data:image/png;base64,") == 8
    assert "<table>" in html and "src=\"plots/" not in html


def test_cli_missing_dir_exits_2_with_one_line(tmp_path: Path):
    proc = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(tmp_path / "nope")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_USER_ERROR == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "does not exist" in lines[0]
    assert not (tmp_path / "nope").exists()


def test_missing_sweep_folder_is_a_user_error(tmp_path: Path):
    with pytest.raises(SeqftError, match="does not exist"):
        cli.resolve_sweep_dir(tmp_path / "nope", tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(SeqftError, match="not a folder"):
        cli.resolve_sweep_dir(tmp_path / "file", tmp_path)


def test_cli_no_jobs_and_default_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "empty").mkdir()
    assert user_error_exit([str(tmp_path / "empty")]) == 2
    assert not (tmp_path / "empty" / "compare").exists()  # nothing written
    monkeypatch.chdir(tmp_path)
    assert user_error_exit([]) == 2  # no ./outputs at all
    sweep = tmp_path / "outputs" / "multirun" / "s1"
    write_job(sweep / "0", make_config("joint", [[3, 4, 7]], 0), metric_dict(0.9, 0.9, 0.9), BASE[0])
    (sweep / "multirun.yaml").write_text("{}\n")
    assert newest_sweep_dir(tmp_path / "outputs") == sweep
    assert newest_sweep_dir(tmp_path / "outputs" / "multirun") == sweep


def test_trend_keeps_only_baseline_and_merged_point_for_combined_models():
    """Stages 1..T of a merging run are separate models, not a sequence: the trend keeps stage 0
    and the merged stage; a sequential run keeps every stage."""
    import pandas as pd

    from seqft_lightning.compare.plots import _sequence_stages

    merged = pd.DataFrame({
        "stage": [0, 1, 2, 3],
        "trained_classes": ["pretrain", "3", "4", "merged"],
        "evaluated": ["all"] * 4,
        "acc": [0.97, 0.3, 0.4, 0.96],
    })
    assert list(_sequence_stages(merged)["stage"]) == [0, 3]
    sequential = merged.assign(trained_classes=["pretrain", "3", "4", "7"])
    assert list(_sequence_stages(sequential)["stage"]) == [0, 1, 2, 3]
    joint = merged.iloc[:2].assign(trained_classes=["pretrain", "3+4+7"])
    assert list(_sequence_stages(joint)["stage"]) == [0, 1]


def test_report_names_retention_that_could_not_act(tmp_path: Path):
    sweep = build_sweep(tmp_path)
    ewc_jobs = [p.parent for p in sweep.glob(f"*/{METRICS_FILE}") if json.loads(p.read_text())["retention"] == "ewc"]
    assert ewc_jobs
    for job in ewc_jobs:
        metrics = json.loads((job / METRICS_FILE).read_text())
        metrics["retention_inactive"] = "one training stage and no pretraining pool: the Fisher is 0"
        (job / METRICS_FILE).write_text(json.dumps(metrics))
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "compare" / "report.md").read_text()
    assert "could not act" in md and "the Fisher is 0" in md


# --------------------------------------------------------------------------- the study: knob grids, nested selection

LAMBDAS = (1, 100, 10000)
STUDY_BASE_CAL_RETAINED = 0.96  # the baseline's calibration retained accuracy; delta 0.01 -> floor 0.95
#: Calibration (target, retained) of each EWC job, by method, seed and lambda (overall = 0.3 t + 0.7 r).
STUDY_CAL = {
    "sequential": {
        0: {1: (0.99, 0.80), 100: (0.97, 0.955), 10000: (0.95, 0.97)},
        1: {1: (0.99, 0.90), 100: (0.98, 0.94), 10000: (0.96, 0.951)},
        2: {1: (0.99, 0.70), 100: (0.98, 0.80), 10000: (0.97, 0.90)},
    },
    "joint": {
        0: {1: (0.96, 0.96), 100: (0.96, 0.96), 10000: (0.95, 0.99)},
        1: {1: (0.99, 0.95), 100: (0.98, 0.97), 10000: (0.97, 0.99)},
        2: {1: (0.97, 0.93), 100: (0.975, 0.952), 10000: (0.96, 0.965)},
    },
}
#: What `target_at_retained`, delta 0.01, must pick, worked out by hand (value, fallback):
#: seq s0: 100 and 1e4 keep retained >= 0.95, 100 has the higher target; s1: only 1e4 qualifies;
#: s2: none qualifies -> the best retained, 1e4, flagged. joint s0: 1 and 100 tie in target and
#: retained -> the smaller knob value, 1; s1: 1 sits exactly on the floor (0.95) and has the best
#: target; s2: 100 and 1e4 qualify, 100 has the higher target.
EXPECTED_CHOICE = {
    ("sequential+ewc (tuned)", 0): (100, False), ("sequential+ewc (tuned)", 1): (10000, False),
    ("sequential+ewc (tuned)", 2): (10000, True),
    ("joint+ewc (tuned)", 0): (1, False), ("joint+ewc (tuned)", 1): (1, False), ("joint+ewc (tuned)", 2): (100, False),
}
#: Test (target, retained) by method and lambda (+0.001 * seed on target): chosen by the rule on
#: test numbers, lambda=1e4 would win everywhere (best retained) -- never what calibration picks for joint.
STUDY_TEST = {"sequential": {1: (0.90, 0.80), 100: (0.93, 0.90), 10000: (0.94, 0.95)},
              "joint": {1: (0.91, 0.85), 100: (0.915, 0.92), 10000: (0.92, 0.96)}}
#: Naive and merging jobs: calibration (target, retained), test (target, retained).
STUDY_PLAIN = {"sequential": ((0.99, 0.70), (0.97, 0.70)), "sequential_keep": ((0.99, 0.72), (0.975, 0.71)),
               "joint": ((0.98, 0.93), (0.96, 0.92)), "task_arithmetic": ((0.94, 0.97), (0.93, 0.96))}


def overall(target: float, retained: float) -> float:
    return 0.3 * target + 0.7 * retained


def study_metrics(cal: tuple[float, float], test: tuple[float, float]) -> dict[str, float]:
    return metric_dict(overall(*test), *test, cal=(overall(*cal), *cal))


def build_study(root: Path) -> Path:
    """Seeds 0-2: baseline, sequential (reset_optimizer true and false), joint, task_arithmetic, and
    sequential+ewc / joint+ewc over retention.lambda_ in LAMBDAS; numbers from the tables above."""
    sweep = root / "study"
    sweep.mkdir(parents=True)
    n = iter(range(1000))
    for s in range(3):
        base = study_metrics((0.97, STUDY_BASE_CAL_RETAINED), (0.96, 0.965))
        write_job(sweep / str(next(n)), make_config("baseline", [], s), base, base)
        for name, reset in (("sequential", True), ("sequential_keep", False)):
            cfg = make_config("sequential", [[3], [4], [7]], s)
            cfg["method"]["reset_optimizer"] = reset
            write_job(sweep / str(next(n)), cfg, study_metrics(*STUDY_PLAIN[name]), base)
        write_job(sweep / str(next(n)), make_config("joint", [[3, 4, 7]], s), study_metrics(*STUDY_PLAIN["joint"]), base)
        write_job(sweep / str(next(n)), make_config("task_arithmetic", [[3], [4], [7]], s),
                  study_metrics(*STUDY_PLAIN["task_arithmetic"]), base, lam=0.5)
        for method, stages in (("sequential", [[3], [4], [7]]), ("joint", [[3, 4, 7]])):
            for lam in LAMBDAS:
                cfg = make_config(method, stages, s, retention="EWC")
                del cfg["retention"]["strength"]
                cfg["retention"]["lambda_"] = lam
                cfg["retention"]["seed"] = 0
                if method == "sequential":
                    cfg["method"]["reset_optimizer"] = True
                t_target, t_retained = STUDY_TEST[method][lam]
                write_job(sweep / str(next(n)), cfg,
                          study_metrics(STUDY_CAL[method][s][lam], (t_target + 0.001 * s, t_retained)), base)
    return sweep


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep = build_study(tmp_path_factory.mktemp("study"))
    assert cli.main([str(sweep)]) == 0
    return sweep


def tuned_choices(sweep: Path | agg.Analysis) -> dict[tuple[str, int], tuple[float, bool, str]]:
    """``{(tuned variant, seed): (chosen value, fallback, job)}`` of compare's tuned.csv (or of an analysis)."""
    df = sweep.choices if isinstance(sweep, agg.Analysis) else pd.read_csv(sweep / "compare" / "tuned.csv")
    df = df[df["kind"] == "knob"]
    return {(r.variant, int(r.seed)): (float(r.chosen), bool(r.fallback), str(r.job)) for r in df.itertuples()}


def test_knob_grids_group_grid_points_not_other_settings(study: Path):
    analysis = agg.analyse(load_jobs(study))
    curves = {c.label: c for c in analysis.grids}
    assert set(curves) == {"sequential+ewc (tuned)", "joint+ewc (tuned)"}  # reset_optimizer is not a knob
    assert curves["sequential+ewc (tuned)"].key == "retention.lambda_"
    assert curves["sequential+ewc (tuned)"].values == [1, 100, 10000]  # ascending: the candidate order
    assert analysis.tuned == ["joint+ewc (tuned)", "sequential+ewc (tuned)"]
    # grid points are shown through their tuned variant; the optimizer-state row is shown as is
    assert "sequential+ewc retention.lambda_=100" in analysis.variants
    assert "sequential+ewc retention.lambda_=100" not in analysis.shown
    assert {"sequential method.reset_optimizer=false", "sequential method.reset_optimizer=true", "joint",
            "task_arithmetic", "sequential+ewc (tuned)"} <= set(analysis.shown)


def test_tuned_choice_is_what_the_rule_picks_from_calibration(study: Path):
    choices = tuned_choices(study)
    assert {k: v[:2] for k, v in choices.items()} == EXPECTED_CHOICE
    # the same choice recomputed here from the job files' calibration numbers, by hand: among the
    # settings with retained >= baseline - delta the best target (ties: the smaller lambda), else
    # the best retained -- not by calling selection.select
    for (variant, seed), (value, fallback, job) in choices.items():
        method = variant.split("+")[0]
        cal = STUDY_CAL[method][seed]
        ok = [lam for lam in LAMBDAS if cal[lam][1] >= STUDY_BASE_CAL_RETAINED - 0.01 - 1e-12]
        best = (max(ok, key=lambda lam: (cal[lam][0], cal[lam][1], -lam)) if ok
                else max(LAMBDAS, key=lambda lam: (cal[lam][1], cal[lam][0], -lam)))
        assert (value, fallback) == (best, not ok), (variant, seed)
        written = json.loads((study / job / METRICS_FILE).read_text())
        assert written["final"]["calibration/acc_target"] == cal[best][0]
        assert json.loads((study / job / CONFIG_FILE).read_text())["retention"]["lambda_"] == best
    # the tuned variant reports the chosen jobs' TEST numbers: seq s0 picks 100 -> test target 0.93
    tuned = pd.read_csv(study / "compare" / "tuned.csv").set_index(["variant", "seed"])
    assert tuned.loc[("sequential+ewc (tuned)", 0), "test/acc_target"] == pytest.approx(0.93)
    assert tuned.loc[("sequential+ewc (tuned)", 2), "test/acc_target"] == pytest.approx(0.942)
    assert tuned.loc[("joint+ewc (tuned)", 2), "calibration/acc_target"] == pytest.approx(0.975)
    assert (tuned["rule"] == "target_at_retained").all() and (tuned["delta"] == 0.01).all()
    assert tuned.loc[("sequential+ewc (tuned)", 0), "cost/grid_train_flops"] == pytest.approx(3 * 6e6)
    # merging methods: the lambda their jobs chose in-run, same table
    assert tuned.loc[("task_arithmetic", 1), "chosen"] == 0.5
    assert tuned.loc[("task_arithmetic", 1), "kind"] == "merging (in-run)"


def _blank_test_metrics(sweep: Path, how: str) -> None:
    """Every test/* value of every metrics.json -> NaN ("nan") or a random number ("scramble");
    lambda_test.csv and stages.csv (test numbers too) are removed."""
    rng = np.random.default_rng(0)
    for path in sweep.glob(f"*/{METRICS_FILE}"):
        metrics = json.loads(path.read_text())
        blocks = [metrics["final"], metrics["baseline"], *metrics["per_stage"]]
        for block in blocks:
            for key in block:
                if key.startswith("test/"):
                    block[key] = float("nan") if how == "nan" else float(rng.uniform())
        path.write_text(json.dumps(metrics))
        for name in (LAMBDA_TEST_FILE, STAGES_FILE):
            (path.parent / name).unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["nan", "scramble"])
def test_test_metrics_never_enter_the_choice(study: Path, tmp_path: Path, how: str):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("compare"))
    _blank_test_metrics(copy, how)
    if how == "nan":  # the whole comparison runs on a sweep without test numbers
        assert cli.main([str(copy)]) == 0
        assert tuned_choices(copy) == tuned_choices(study)
    blanked = agg.analyse(load_jobs(copy))
    assert tuned_choices(blanked) == tuned_choices(study)
    assert blanked.best["variant"] == agg.analyse(load_jobs(study)).best["variant"] == "joint+ewc (tuned)"


def test_best_method_under_the_rule(study: Path):
    analysis = agg.analyse(load_jobs(study))
    best = analysis.best
    # mean calibration (target, retained): joint+ewc (tuned) (0.975, 0.954) and task_arithmetic
    # (0.94, 0.97) keep retained within 1 pp of the baseline's 0.96; joint+ewc has the higher target.
    assert best["variant"] == "joint+ewc (tuned)" and not best["fallback"]
    assert best["candidates"][0]["variant"] == "baseline"  # "do not fine-tune" is a candidate, first
    assert best["baseline_retained"] == pytest.approx(0.96)
    qualifies = {r["variant"]: r["qualifies"] for r in best["candidates"]}
    assert qualifies == {"baseline": True, "joint": False, "sequential method.reset_optimizer=false": False,
                         "sequential method.reset_optimizer=true": False, "joint+ewc (tuned)": True,
                         "sequential+ewc (tuned)": False, "task_arithmetic": True}
    md = (study / "compare" / "report.md").read_text()
    assert "**Best method under the selection rule: `joint+ewc (tuned)`**" in md


def test_tuned_pair_hypothesis(study: Path):
    analysis = agg.analyse(load_jobs(study))
    rows = {r["metric"]: r for r in analysis.tuned_hypothesis}
    assert {(r["variant"], r["reference"]) for r in analysis.tuned_hypothesis} == {
        ("sequential+ewc (tuned)", "joint+ewc (tuned)")}
    # chosen test targets: seq 0.93, 0.941, 0.942; joint 0.91, 0.911, 0.917 -> diffs 0.02, 0.03, 0.025
    assert rows["test/acc_target"]["mean_diff"] == pytest.approx(0.025)
    assert rows["test/acc_target"]["verdict"] == SUPPORTED
    for name in ("report.md", "hypothesis.md"):
        text = (study / "compare" / name).read_text()
        assert "`sequential+ewc (tuned)` vs `joint+ewc (tuned)`, target acc (pooled): **supported**" in text, name


def test_report_leads_with_the_answer(study: Path):
    out = study / "compare"
    md = re.sub(" {2,}", " ", (out / "report.md").read_text())  # to_markdown pads table cells
    html = (out / "report.html").read_text()
    images = [line for line in md.splitlines() if line.startswith("![")]
    assert images[0].endswith("(plots/tradeoff.png)")  # the first figure is the trade-off plot
    assert html.index("<img") < html.index("<em>Target (y) vs retained (x)") < html.index("Tuned variants")
    assert md.index("## Answer") < md.index("![") < md.index("**Tuned variants and their references**") \
        < md.index("### Verdict") < md.index("**Cost per variant**") < md.index("## Jobs")
    assert "plots/accuracy_vs_compute.png" in md
    rule = "Selection rule: `target_at_retained`, δ = 0.01"
    for name in ("report.md", "summary.md", "hypothesis.md"):
        assert rule in (out / name).read_text(), name
    tuned_row = next(line for line in md.splitlines() if line.startswith("| `sequential+ewc (tuned)` | retention.lambda_"))
    assert "| 1, 100, 10000 | s0: 100, s1: 10000, s2: 10000\\* |" in tuned_row  # * = fallback, escaped
    cost = md[md.index("**Cost per variant**"):]
    keep = next(line for line in cost.splitlines() if line.startswith("| `sequential method.reset_optimizer=false`"))
    assert "| 3e+06 |" in keep and "| cpu |" in keep  # train FLOPs of 3 stages, device
    tuned_cost = next(line for line in cost.splitlines() if line.startswith("| `sequential+ewc (tuned)`"))
    assert tuned_cost.endswith("| 1.8e+07 | 4.5 |")  # the whole grid: 3 x 6e6 FLOPs, 3 x 1.5 s
    assert "Pareto front" in md


def test_summary_csv_has_calibration_cost_and_knob_columns(study: Path):
    csv = pd.read_csv(study / "compare" / "summary.csv")
    for col in ("calibration/acc", "calibration/acc_target", "calibration/acc_retained", "calibration/selection_score",
                "baseline/calibration/acc", "baseline/calibration/acc_target", "baseline/calibration/acc_retained",
                "cost/optimizer_steps", "cost/train_samples", "cost/train_flops", "cost/eval_flops",
                "cost/total_flops", "cost/extra_memory_bytes", "cost/pretrain_steps", "cost/train_wall_s",
                "cost/device", "retention.lambda_", "chosen_for",
                "test/acc", "test/acc_target", "baseline/test/acc_retained"):  # old columns kept
        assert col in csv.columns, col
    row = csv[(csv["variant"] == "sequential+ewc retention.lambda_=100") & (csv["seed"] == 0)].iloc[0]
    assert row["retention.lambda_"] == 100 and row["chosen_for"] == "sequential+ewc (tuned)"
    assert row["calibration/acc_target"] == pytest.approx(0.97)
    assert row["baseline/calibration/acc_retained"] == pytest.approx(0.96)
    assert row["cost/train_flops"] == pytest.approx(6e6) and row["cost/device"] == "cpu"
    assert csv.loc[(csv["variant"] == "sequential+ewc retention.lambda_=1") & (csv["seed"] == 0), "chosen_for"].isna().all()
    assert len(csv) == 3 * 11


def test_rule_override_and_disagreeing_jobs(study: Path, tmp_path: Path):
    import shutil

    copy = tmp_path / "study"
    shutil.copytree(study, copy, ignore=shutil.ignore_patterns("compare"))
    # --rule overall: the highest overall calibration accuracy (0.3 target + 0.7 retained), by hand
    assert cli.main([str(copy), "--rule", "overall"]) == 0
    for (variant, seed), (value, fallback, _) in tuned_choices(copy).items():
        cal = STUDY_CAL[variant.split("+")[0]][seed]
        assert value == max(LAMBDAS, key=lambda lam: (overall(*cal[lam]), -lam)) and not fallback
    assert tuned_choices(copy)[("sequential+ewc (tuned)", 0)][0] == 10000
    md = (copy / "compare" / "report.md").read_text()
    assert "Selection rule: `overall`" in md and "the command line (--rule/--delta)" in md
    # jobs that ran with different rules: one line, exit 2, unless the command line settles it
    cfg_path = next(copy.glob(f"*/{CONFIG_FILE}"))
    cfg = json.loads(cfg_path.read_text())
    cfg["selection"]["delta"] = 0.05
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(SeqftError, match="different selection rules"):
        agg.analyse(load_jobs(copy))
    assert user_error_exit([str(copy)]) == EXIT_USER_ERROR
    settled = agg.analyse(load_jobs(copy), delta=0.02)
    assert (settled.selection.rule, settled.selection.delta) == ("target_at_retained", 0.02)
    assert "the command line" in settled.selection.source
    assert user_error_exit([str(copy), "--delta", "2"]) == EXIT_USER_ERROR  # not a fraction


def test_pareto_front():
    x = [0.9, 0.8, 0.95, 0.7, 0.95, float("nan")]
    y = [0.9, 0.95, 0.85, 0.9, 0.85, 1.0]
    # (0.7, 0.9) is dominated by (0.9, 0.9); equal points do not dominate each other; NaN never on it
    assert plots.pareto_front(x, y).tolist() == [True, True, True, False, True, False]


def test_t_interval_groups_equals_t_interval():
    from seqft_lightning.compare.stats import t_interval_groups

    df = pd.DataFrame({"v": ["a"] * 3 + ["b"] * 2 + ["c"], "x": [1] * 6,
                       "y": [0.92, 0.94, 0.93, 0.99, 0.90, 0.5]})
    out = t_interval_groups(df, ["v", "x"], "y", 0.95, (0.0, 1.0)).set_index("v")
    for v in "abc":
        s = t_interval(df.loc[df["v"] == v, "y"], 0.95, (0.0, 1.0))
        assert out.loc[v, "n"] == s.n and out.loc[v, "mean"] == pytest.approx(s.mean)
        for got, want in ((out.loc[v, "ci_low"], s.ci_low), (out.loc[v, "ci_high"], s.ci_high)):
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want)
    assert out.loc["b", "ci_high"] == 1.0  # clipped
