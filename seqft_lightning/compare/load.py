"""Read the job folders of a sweep (the run-folder contract, :mod:`seqft_lightning.contract`): JSON and CSV only.

A *job dir* holds ``config.json`` (the resolved, result-relevant config, written before any work) or ``error.json``
(a refusal, or a crash recorded by :class:`~seqft_lightning.progress.SweepProgress`); nothing is read from folder
names or logs. ``metrics.json`` is written last and atomically: a job without it or ``error.json`` is unfinished.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqft_lightning.compare.variants import method_name
from seqft_lightning.contract import (CALIBRATION_FILE, CONFIG_FILE, CURVES_FILE, DIVERGENCE, ERROR_FILE,
                                      LAMBDA_TEST_FILE, METRICS_FILE, RUN_INFO_FILE, STAGES_FILE, confusion_file,
                                      retention_name)
from seqft_lightning.errors import SeqftError
from seqft_lightning.values import is_finite_number

log = logging.getLogger(__name__)


@dataclass
class Job:
    """One job as read (accuracies are fractions in [0, 1]). ``status``: ``"ok"`` (metrics.json read), ``"failed"``
    (error.json) or ``"unfinished"``. ``divergence``: None, or metrics.json's first
    diverged epoch ``{"stage", "epoch", "train_loss", "reason"}`` (:mod:`.aggregate` decides if such a job counts)."""

    path: Path
    rel: str
    config: dict[str, Any] = field(default_factory=dict)
    status: str = "unfinished"
    reason: str = f"no {METRICS_FILE} nor {ERROR_FILE}: still running, or killed"
    metrics: dict[str, Any] | None = None
    divergence: dict[str, Any] | None = None
    run_info: dict[str, Any] | None = None  # wall time and device (cost/train_wall_s, cost/device)
    stages: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None  # merging: the λ search on calibration
    lambda_test: pd.DataFrame | None = None  # merging: the same grid on test (plots only)
    confusion_stage: int | None = None  # the final model's: stage 0 (baseline) plus one per trained stage
    confusion: np.ndarray | None = None  # its counts on test, rows true class, columns predicted
    warnings: list[str] = field(default_factory=list)  # files skipped: absent or unreadable
    ok = property(lambda self: self.status == "ok")
    diverged = property(lambda self: self.divergence is not None)
    method = property(lambda self: method_name(self.config))  # "unknown" without a config
    retention = property(lambda self: retention_name(self.config))  # "none" without a retention method
    seed = property(lambda self: int(self.config["seed"]) if is_finite_number(self.config.get("seed")) else None)


def find_job_dirs(root: Path) -> list[Path]:
    """Every folder under ``root`` with config.json or error.json, naturally sorted; a run written before
    config.json existed is refused in one line."""
    dirs = {p.parent for name in (CONFIG_FILE, ERROR_FILE) for p in Path(root).rglob(name)}
    if old := sorted(p.parent.parent for p in Path(root).rglob(".hydra/config.yaml") if p.parent.parent not in dirs):
        raise SeqftError(f"{old[0]} has no {CONFIG_FILE}: it was written by an older seqft-lightning (or killed as "
                         "it started); rerun the sweep")
    return sorted(dirs, key=lambda p: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.as_posix())])


def newest_sweep_dir(outputs: Path) -> Path | None:
    """The sweep folder under ``outputs/multirun`` (or ``outputs``) whose Hydra ``multirun.yaml`` was modified last
    (never chosen by its name); None when there is none."""
    base = Path(outputs) / "multirun" if (Path(outputs) / "multirun").is_dir() else Path(outputs)
    found = sorted(base.rglob("multirun.yaml"), key=lambda p: (p.stat().st_mtime, p.as_posix()))
    return found[-1].parent if found else None


def _csv(job: Job, name: str, **kwargs: Any) -> pd.DataFrame | None:
    """The job's CSV file ``name``; None when absent or unreadable (a job warning)."""
    try:
        return pd.read_csv(job.path / name, **kwargs)
    except Exception as exc:
        job.warnings.append(f"could not read {name}: {exc}")
        return None


def load_job(job_dir: Path, root: Path) -> Job:
    """Read one job dir; a missing CSV file is a job warning, never fatal; an unreadable JSON file makes the job
    failed (the file and why), never the comparison."""
    job = Job(job_dir, job_dir.relative_to(root).as_posix())
    read: dict[str, Any] = {}
    for name in (CONFIG_FILE, ERROR_FILE, METRICS_FILE, RUN_INFO_FILE):
        try:
            read[name] = json.loads((job_dir / name).read_text(encoding="utf-8")) if (job_dir / name).is_file() else None
        except (OSError, ValueError) as err:  # ValueError: JSON or UTF-8 decoding
            job.config, job.status = read.get(CONFIG_FILE) or {}, "failed"
            job.reason = f"{name} is unreadable ({' '.join(str(err).split())}): rerun the job (resume=true redoes it)"
            return job
    config, error, job.metrics, job.run_info = read.values()
    job.config = config or {}
    if job.metrics is None:
        if error is not None:  # a refusal (exit status 2) or a crash
            job.status, job.reason = "failed", str(error["error"])
        return job
    job.status, job.reason, job.divergence = "ok", "", job.metrics.get(DIVERGENCE)
    job.stages, job.curves = _csv(job, STAGES_FILE), _csv(job, CURVES_FILE)
    recorded = 1 + len(job.metrics.get("per_stage") or [])  # the baseline and one per metrics.json entry
    if job.stages is not None and ((rows := job.stages.groupby("stage").size()).nunique() > 1 or len(rows) != recorded):
        job.warnings.append(f"{STAGES_FILE} is incomplete ({dict(rows)} rows per stage, {recorded} stages recorded): "
                            "left out of the figures")
        job.stages = None
    job.calibration, job.lambda_test = ((_csv(job, name) if (job_dir / name).is_file() else None)  # merging only
                                        for name in (CALIBRATION_FILE, LAMBDA_TEST_FILE))
    job.confusion_stage = recorded - 1  # the final model's
    confusion = _csv(job, confusion_file(job.confusion_stage), index_col=0)
    job.confusion = None if confusion is None else confusion.to_numpy(dtype=float)
    return job


def load_jobs(root: Path) -> list[Job]:
    """Every job dir under ``root``, read; a warning for each job that did not finish and each file skipped. A
    folder without a finished job is refused in one line."""
    if not (jobs := [load_job(job_dir, Path(root)) for job_dir in find_job_dirs(root)]):
        raise SeqftError(f"no job dirs (folders with {CONFIG_FILE}) under {root}: pass a sweep folder")
    if not any(job.ok for job in jobs):
        raise SeqftError(f"no job of {root} has finished, nothing to compare ({len(jobs)} job(s), e.g. "
                         + "; ".join(f"{j.rel}: {j.reason}" for j in jobs[:2])
                         + "); fix and rerun the sweep (resume=true redoes only the unfinished jobs)")
    for job in jobs:
        log.debug("read %s: %s, method %s, retention %s, seed %s", job.rel, job.status, job.method, job.retention, job.seed)
        for problem in ([] if job.ok else [f"{job.status}, {job.reason}"]) + job.warnings:
            log.warning("job %s: %s", job.rel, problem)
    log.info("read %d jobs (%d failed)", len(jobs), sum(not job.ok for job in jobs))
    return jobs
