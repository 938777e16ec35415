"""Read the job folders of a sweep (the run-folder contract of the training pipeline).

A *job dir* is any folder holding ``.hydra/config.yaml``; nothing is inferred from folder
names. ``metrics.json`` is written last and atomically, so a job without it has failed
or is unfinished; the tail of its log is searched for the error line. Optional files
(``stages.csv``, ``curves.csv``, ``confusion/stage_<k>.csv``, ``calibration.csv``) that
are missing or malformed are logged and skipped, never fatal.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqft_lightning.compare.variants import method_name, retention_name

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_UNFINISHED = "unfinished"

CONFIG_FILE = Path(".hydra") / "config.yaml"
STAGES_COLUMNS = ("stage", "trained_classes", "evaluated", "acc")
CURVES_COLUMNS = ("stage", "epoch", "step", "split", "metric", "value")
CALIBRATION_COLUMNS = ("lambda", "acc", "acc_target", "acc_retained")

_EXC_LINE = re.compile(r"^\s*(\w[\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")
_ERR_LINE = re.compile(r"(Traceback|\bERROR\b|CRITICAL|out of memory|Killed|Segmentation fault|"
                       r"Error executing job)", re.IGNORECASE)
_CONFUSION_NAME = re.compile(r"^stage_(\d+)\.csv$")


@dataclass
class Job:
    """One training job as read from disk.

    ``status`` is ``"ok"`` (``metrics.json`` present and readable), ``"failed"`` (an error
    was found) or ``"unfinished"`` (no ``metrics.json`` and no error line in the log).
    Accuracies anywhere in here are fractions in [0, 1].
    """

    path: Path
    rel: str
    config: dict[str, Any]
    status: str
    reason: str = ""
    method: str = "unknown"
    retention: str = "none"
    seed: int | None = None
    metrics: dict[str, Any] | None = None
    stages: pd.DataFrame | None = None
    curves: pd.DataFrame | None = None
    confusion: np.ndarray | None = None
    confusion_stage: int | None = None
    calibration: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


def _natural_key(text: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def find_job_dirs(root: Path) -> list[Path]:
    """Every folder at or under ``root`` that holds ``.hydra/config.yaml`` (naturally sorted).

    Job dirs are not searched further; hidden folders are skipped.
    """
    root = Path(root)
    found: list[Path] = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if (here / CONFIG_FILE).is_file():
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    return sorted(found, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def newest_sweep_dir(outputs: Path) -> Path | None:
    """The most recently modified sweep folder under ``outputs/multirun`` (or ``outputs``).

    A sweep folder holds Hydra's ``multirun.yaml`` or job dirs as direct children;
    recency is the modification time of ``multirun.yaml`` (else of the folder), never
    the folder name.
    """
    outputs = Path(outputs)
    base = outputs / "multirun" if (outputs / "multirun").is_dir() else outputs
    if not base.is_dir():
        return None
    candidates: dict[Path, float] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        here = Path(dirpath)
        if (here / CONFIG_FILE).is_file():
            parent = here.parent
            if parent != here and parent.is_relative_to(base):
                candidates.setdefault(parent, parent.stat().st_mtime)
            dirnames[:] = []
            continue
        if "multirun.yaml" in filenames:
            candidates[here] = (here / "multirun.yaml").stat().st_mtime
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (candidates[p], p.as_posix()))


def read_config(path: Path) -> dict[str, Any]:
    """Composed Hydra config as plain containers (interpolations resolved when possible)."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    try:
        data = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:...} outside a Hydra run
        data = OmegaConf.to_container(cfg, resolve=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a mapping")
    return data


def find_error_line(log_text: str, tail_lines: int = 200) -> str:
    """The most telling error line of a log's tail ('' when none).

    Prefers the last Python exception line (``RuntimeError: ...``) over generic markers.
    """
    lines = [ln.rstrip() for ln in log_text.splitlines()[-tail_lines:] if ln.strip()]
    for ln in reversed(lines):
        m = _EXC_LINE.match(ln)
        if m:
            return m.group(1).strip()
    for ln in reversed(lines):
        if _ERR_LINE.search(ln):
            return ln.strip()
    return ""


def _log_files(job_dir: Path) -> list[Path]:
    preferred = job_dir / "train.log"
    others = sorted(p for p in job_dir.glob("*.log") if p != preferred)
    return ([preferred] if preferred.is_file() else []) + others


def _read_tail(path: Path, max_bytes: int = 64_000) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        return fh.read().decode("utf-8", errors="replace")


def _read_csv(path: Path, required: Iterable[str], job: Job, **kwargs: Any) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as exc:  # malformed file: note it, keep going
        job.warnings.append(f"could not read {path.name}: {exc}")
        return None
    missing = [c for c in required if c not in df.columns]
    if missing:
        job.warnings.append(f"{path.name} lacks columns {missing}")
        return None
    return df


def _read_confusion(job_dir: Path, job: Job) -> tuple[np.ndarray | None, int | None]:
    folder = job_dir / "confusion"
    if not folder.is_dir():
        return None, None
    staged = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CONFUSION_NAME.match(p.name))]
    if not staged:
        return None, None
    stage, path = max(staged)
    try:
        df = pd.read_csv(path, index_col=0)
        mat = df.to_numpy(dtype=float)
    except Exception as exc:
        job.warnings.append(f"could not read confusion/{path.name}: {exc}")
        return None, None
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1]:
        job.warnings.append(f"confusion/{path.name} is not square: {mat.shape}")
        return None, None
    return mat, stage


def _metric_dict_to_rows(stage: int, trained: str, d: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    if "test/acc" in d:
        rows.append({"stage": stage, "trained_classes": trained, "evaluated": "all",
                     "acc": d.get("test/acc"), "precision": d.get("test/precision"),
                     "recall": d.get("test/recall"), "f1": d.get("test/f1"), "loss": d.get("test/loss")})
    for key, evaluated in (("test/acc_target", "target"), ("test/acc_retained", "retained")):
        if key in d:
            rows.append({"stage": stage, "trained_classes": trained, "evaluated": evaluated, "acc": d[key]})
    for key, value in d.items():
        m = re.fullmatch(r"test/acc_class_(\d+)", key)
        if m:
            rows.append({"stage": stage, "trained_classes": trained,
                         "evaluated": f"class_{m.group(1)}", "acc": value})
    return rows


def stages_from_metrics(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """Fallback for a missing ``stages.csv``: stage 0 = ``baseline``, stage k = ``per_stage[k-1]``."""
    rows: list[dict[str, Any]] = []
    if isinstance(metrics.get("baseline"), Mapping):
        rows += _metric_dict_to_rows(0, "pretrain", metrics["baseline"])
    stages = metrics.get("stages") or []
    for k, d in enumerate(metrics.get("per_stage") or [], start=1):
        if isinstance(d, Mapping):
            trained = "+".join(str(c) for c in stages[k - 1]) if k - 1 < len(stages) else str(k)
            rows += _metric_dict_to_rows(k, trained, d)
    return pd.DataFrame(rows) if rows else None


def load_job(job_dir: Path, root: Path) -> Job:
    """Read one job dir; never raises for missing or malformed job files."""
    job_dir = Path(job_dir)
    rel = job_dir.relative_to(root).as_posix() if job_dir != root else "."
    try:
        config = read_config(job_dir / CONFIG_FILE)
    except Exception as exc:
        return Job(path=job_dir, rel=rel, config={}, status=STATUS_FAILED,
                   reason=f"unreadable .hydra/config.yaml: {exc}")
    job = Job(path=job_dir, rel=rel, config=config, status=STATUS_UNFINISHED,
              method=method_name(config), retention=retention_name(config))
    seed = config.get("seed")
    job.seed = int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None

    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        error = ""
        for log_file in _log_files(job_dir):
            try:
                error = find_error_line(_read_tail(log_file))
            except OSError:
                continue
            if error:
                job.status, job.reason = STATUS_FAILED, f"{log_file.name}: {error}"
                break
        if not error:
            job.reason = "no metrics.json (still running, killed, or crashed without a log line)"
        return job

    try:
        with open(metrics_path, encoding="utf-8") as fh:
            metrics = json.load(fh)
        if not isinstance(metrics, dict):
            raise ValueError("top level is not an object")
    except Exception as exc:
        job.status, job.reason = STATUS_FAILED, f"unreadable metrics.json: {exc}"
        return job

    job.status, job.metrics = STATUS_OK, metrics
    if job.method == "unknown" and metrics.get("method"):
        job.method = str(metrics["method"])
    if job.seed is None and isinstance(metrics.get("seed"), (int, float)):
        job.seed = int(metrics["seed"])
    job.stages = _read_csv(job_dir / "stages.csv", STAGES_COLUMNS, job)
    if job.stages is None:
        job.stages = stages_from_metrics(metrics)
    job.curves = _read_csv(job_dir / "curves.csv", CURVES_COLUMNS, job)
    job.confusion, job.confusion_stage = _read_confusion(job_dir, job)
    job.calibration = _read_csv(job_dir / "calibration.csv", CALIBRATION_COLUMNS, job)
    return job


def load_jobs(root: Path) -> list[Job]:
    """Load every job dir under ``root``, logging what was read."""
    root = Path(root)
    jobs = []
    for job_dir in find_job_dirs(root):
        job = load_job(job_dir, root)
        seed = "?" if job.seed is None else job.seed
        if job.ok:
            log.info("read job %s: %s (retention=%s, seed=%s)", job.rel, job.method, job.retention, seed)
        else:
            log.warning("job %s is %s: %s", job.rel, job.status, job.reason)
        for w in job.warnings:
            log.warning("job %s: %s", job.rel, w)
        jobs.append(job)
    return jobs


def is_finite_number(value: Any) -> bool:
    """True for real, finite numbers (not bools)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
