"""Read the job folders of a sweep (the run-folder contract, :mod:`seqft_lightning.contract`).

A *job dir* is any folder holding ``.hydra/config.yaml``; nothing is inferred from folder names.
``metrics.json`` is written last and atomically, so a job without it has failed or is unfinished (its log's
tail is searched for the error line). The other files that are missing or unreadable are logged and skipped,
never fatal: a job without ``stages.csv`` simply has no stage table.

``.hydra/config.yaml`` is parsed with libyaml and OmegaConf's number rules; OmegaConf itself (ten times slower)
resolves interpolations only when a key that affects results holds one (seeds such as ``retention.seed: ${seed}``
do not count: no label reads them, :func:`~.variants.is_seed_key`), so a sweep of hundreds of jobs reads in seconds.

A finished job whose ``metrics.json`` has a ``divergence`` entry other than ``null`` diverged
(:attr:`Job.divergence`); it is still ``"ok"`` here, and :mod:`.aggregate` decides whether it counts.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqft_lightning.values import is_finite_number  # noqa: F401  (the compare modules import it from here)
from seqft_lightning.contract import (CALIBRATION_COLUMNS, CALIBRATION_FILE, CONFIG_FILE, CURVE_COLUMNS,
                                      CURVES_FILE, LAMBDA_TEST_FILE, METRICS_FILE, RUN_INFO_FILE, STAGE_COLUMNS,
                                      STAGES_FILE, TRAIN_LOG_FILE, DIVERGENCE, ERROR_FILE, affects_results, confusion_file, flatten)
from seqft_lightning.compare.variants import is_seed_key, method_name, retention_name

log = logging.getLogger(__name__)

STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_UNFINISHED = "unfinished"
#: metrics.json's top-level key of a diverged run: ``null``, else ``{"stage", "epoch", "train_loss", "reason"}``.

_EXC_LINE = re.compile(r"^\s*(\w[\w.]*(Error|Exception|Interrupt|Exit)\b.*)$")
_ERR_LINE = re.compile(r"(Traceback|\bERROR\b|CRITICAL|out of memory|Killed|Segmentation fault|"
                       r"Error executing job)", re.IGNORECASE)


@dataclass
class Job:
    """One training job as read from disk; accuracies anywhere in here are fractions in [0, 1]. ``status`` is
    ``"ok"`` (``metrics.json`` present and readable), ``"failed"`` (an error was found) or ``"unfinished"`` (no
    ``metrics.json`` and no error line in the log)."""

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
    lambda_test: pd.DataFrame | None = None  # merging: the calibration grid on test (plots only)
    run_info: dict[str, Any] | None = None  # wall time and device (cost/train_wall_s, cost/device)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK

    @property
    def divergence(self) -> dict[str, Any] | None:
        """metrics.json's ``divergence``: None when training stayed finite and bounded (and for runs older than the
        key), else ``{"stage": int, "epoch": int, "train_loss": float or None, "reason": str}`` (an entry that is
        not an object becomes ``{"reason": its text}``)."""
        value = (self.metrics or {}).get(DIVERGENCE)
        if value is None:
            return None
        return dict(value) if isinstance(value, dict) else {"reason": str(value)}

    @property
    def diverged(self) -> bool:
        """Whether metrics.json records a divergence (:attr:`divergence` is not None)."""
        return self.divergence is not None


def divergence_text(divergence: dict[str, Any]) -> str:
    """One line for a :attr:`Job.divergence`: ``diverged in stage 2, epoch 3 (train loss nan): <reason>``."""
    where = ", ".join(f"{k} {divergence[k]}" for k in ("stage", "epoch") if divergence.get(k) is not None)
    loss = divergence.get("train_loss")
    detail = " ".join(filter(None, [f"in {where}" if where else "", f"(train loss {loss:.4g})"
                                    if isinstance(loss, (int, float)) and not isinstance(loss, bool) else ""]))
    reason = str(divergence.get("reason") or "").strip()
    return " ".join(filter(None, ["diverged", detail])) + (f": {reason}" if reason else "")


def _walk(root: Path) -> Iterator[tuple[Path, list[str], bool]]:
    """``(folder, its file names, whether it is a job dir)`` at or under ``root``; job dirs and hidden
    folders are not entered."""
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        is_job = (here / CONFIG_FILE).is_file()
        dirnames[:] = [] if is_job else [d for d in dirnames if not d.startswith(".")]
        yield here, filenames, is_job


def find_job_dirs(root: Path) -> list[Path]:
    """Every folder at or under ``root`` that holds ``.hydra/config.yaml`` (naturally sorted)."""
    root = Path(root)
    return sorted((here for here, _, is_job in _walk(root) if is_job), key=lambda p: [
        int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.relative_to(root).as_posix())])


def newest_sweep_dir(outputs: Path) -> Path | None:
    """The most recently modified sweep folder under ``outputs/multirun`` (or ``outputs``): one that holds Hydra's
    ``multirun.yaml`` or job dirs as direct children; recency is the modification time of ``multirun.yaml`` (else
    of the folder), never the folder name."""
    outputs = Path(outputs)
    base = outputs / "multirun" if (outputs / "multirun").is_dir() else outputs
    if not base.is_dir():
        return None
    candidates: dict[Path, float] = {}
    for here, filenames, is_job in _walk(base):
        if is_job and here.parent != here and here.parent.is_relative_to(base):
            candidates.setdefault(here.parent, here.parent.stat().st_mtime)
        elif not is_job and "multirun.yaml" in filenames:
            candidates[here] = (here / "multirun.yaml").stat().st_mtime
    return max(candidates, key=lambda p: (candidates[p], p.as_posix())) if candidates else None


@functools.cache
def _yaml_loader() -> type:
    """libyaml's safe loader with OmegaConf's implicit types: ``1e-3`` is a float (YAML 1.1 reads it
    as a string), dates stay strings."""
    import yaml

    base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    Loader = type("Loader", (base,), {})
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in base.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
         [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
        |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
        |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
    return Loader


def _has_interpolation(value: Any) -> bool:
    """Whether ``value`` holds an interpolation (``${...}``), in lists and mappings too."""
    if isinstance(value, (dict, list)):
        return any(map(_has_interpolation, value.values() if isinstance(value, dict) else value))
    return isinstance(value, str) and "${" in value


def read_config(path: Path) -> dict[str, Any]:
    """Composed Hydra config as plain containers (interpolations resolved when possible; those under
    keys that never affect results, such as ``paths`` and ``logger``, and seed keys may stay unresolved)."""
    import yaml

    with open(path, encoding="utf-8") as fh:
        data = yaml.load(fh, Loader=_yaml_loader())  # noqa: S506 (a safe loader)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a mapping")
    if not any(affects_results(k) and not is_seed_key(k) and _has_interpolation(v) for k, v in flatten(data).items()):
        return data

    from omegaconf import OmegaConf

    cfg = OmegaConf.create(data)
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # e.g. ${hydra:...} outside a Hydra run: resolve what can be, group by group
        pass
    out: dict[str, Any] = {}
    for key, value in OmegaConf.to_container(cfg, resolve=False).items():
        node = cfg.get(key)
        try:
            out[key] = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else cfg[key]
        except Exception:
            out[key] = value
    return out


def find_error_line(log_text: str, tail_lines: int = 200) -> str:
    """The most telling error line of a log's tail ('' when none): the last Python exception line
    (``RuntimeError: ...``), else the last line with a generic marker."""
    lines = [ln.rstrip() for ln in reversed(log_text.splitlines()[-tail_lines:]) if ln.strip()]
    exc = next((m.group(1).strip() for m in map(_EXC_LINE.match, lines) if m), None)
    return exc or next((ln.strip() for ln in lines if _ERR_LINE.search(ln)), "")


def _log_files(job_dir: Path) -> list[Path]:
    preferred = job_dir / TRAIN_LOG_FILE
    others = sorted(p for p in job_dir.glob("*.log") if p != preferred)
    return ([preferred] if preferred.is_file() else []) + others


def _read_tail(path: Path, max_bytes: int = 64_000) -> str:
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        fh.seek(max(0, fh.tell() - max_bytes))
        return fh.read().decode("utf-8", errors="replace")


def _read_csv(job: Job, name: str, columns: Sequence[str] = (), optional: bool = False,
              **kwargs: Any) -> pd.DataFrame | None:
    """``name`` of the job dir as a frame, None when absent (a job warning unless ``optional``) or
    unreadable (a job warning). A contract column the file lacks (a run older than the contract)
    is added empty, with a debug line."""
    path = job.path / name
    if not path.is_file():
        if not optional:
            job.warnings.append(f"no {name}; left out of the plots")
        return None
    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as exc:  # malformed file: note it, keep going
        job.warnings.append(f"could not read {name}: {exc}")
        return None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        log.debug("job %s: %s lacks columns %s; left empty", job.rel, name, missing)
    return df.reindex(columns=[*df.columns, *missing])


def _json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (ValueError when the top level is not an object)."""
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        raise ValueError("top level is not an object")
    return data


def _read_json(job: Job, name: str) -> dict[str, Any] | None:
    """``name`` of the job dir as an object, None when absent (silently) or unreadable (a job warning)."""
    try:
        return _json_object(job.path / name) if (job.path / name).is_file() else None
    except Exception as exc:
        job.warnings.append(f"could not read {name}: {exc}")
        return None


def _read_confusion(job: Job, stage: int) -> np.ndarray | None:
    """Counts of ``confusion/stage_<stage>.csv`` (rows true class, columns predicted)."""
    name = confusion_file(stage)
    df = _read_csv(job, name, index_col=0)
    try:
        mat = None if df is None else df.to_numpy(dtype=float)
    except ValueError as exc:
        job.warnings.append(f"could not read {name}: {exc}")
        return None
    if mat is not None and mat.shape[0] != mat.shape[1]:
        job.warnings.append(f"{name} is not square: {mat.shape}")
        return None
    return mat


def load_job(job_dir: Path, root: Path) -> Job:
    """Read one job dir; never raises for missing or malformed job files."""
    job_dir = Path(job_dir)
    rel = job_dir.relative_to(root).as_posix() if job_dir != root else "."
    try:
        config = read_config(job_dir / CONFIG_FILE)
    except Exception as exc:
        return Job(path=job_dir, rel=rel, config={}, status=STATUS_FAILED,
                   reason=f"unreadable {CONFIG_FILE}: {exc}")
    seed = config.get("seed")
    job = Job(path=job_dir, rel=rel, config=config, status=STATUS_UNFINISHED, method=method_name(config),
              retention=retention_name(config), seed=int(seed) if is_finite_number(seed) else None)
    metrics_path = job_dir / METRICS_FILE
    if not metrics_path.is_file():
        try:  # a job refused for bad input says why in error.json (seqft_lightning.cli.run_or_exit)
            job.status, job.reason = STATUS_FAILED, f"refused: {_json_object(job_dir / ERROR_FILE)['error']}"
            return job
        except Exception:
            job.status = STATUS_UNFINISHED
        for log_file in _log_files(job_dir):
            try:
                error = find_error_line(_read_tail(log_file))
            except OSError:
                continue
            if error:
                job.status, job.reason = STATUS_FAILED, f"{log_file.name}: {error}"
                return job
        job.reason = f"no {METRICS_FILE} (still running, killed, or crashed without a log line)"
        return job
    try:
        metrics = _json_object(metrics_path)
    except Exception as exc:
        job.status, job.reason = STATUS_FAILED, f"unreadable {METRICS_FILE}: {exc}"
        return job
    job.status, job.metrics = STATUS_OK, metrics
    job.stages = _read_csv(job, STAGES_FILE, STAGE_COLUMNS)
    job.curves = _read_csv(job, CURVES_FILE, CURVE_COLUMNS)
    job.calibration = _read_csv(job, CALIBRATION_FILE, CALIBRATION_COLUMNS, optional=True)  # merging only
    job.lambda_test = _read_csv(job, LAMBDA_TEST_FILE, CALIBRATION_COLUMNS, optional=True)
    job.run_info = _read_json(job, RUN_INFO_FILE)
    # The final model is the last recorded stage: stage 0 (baseline) plus one per `per_stage` entry.
    job.confusion_stage = len(metrics.get("per_stage") or [])
    job.confusion = _read_confusion(job, job.confusion_stage)
    return job


def load_jobs(root: Path, report: bool = True) -> list[Job]:
    """Load every job dir under ``root``; ``report``: log them (:func:`report_jobs`: one debug line per
    job, warnings for failed jobs and skipped files, one info line ``read N jobs (k failed)``)."""
    root = Path(root)
    jobs = [load_job(job_dir, root) for job_dir in find_job_dirs(root)]
    if report:
        report_jobs(jobs)
    return jobs


def report_jobs(jobs: list[Job]) -> None:
    """Log each job that did not finish (and its warnings), then one line with the counts."""
    for job in jobs:
        if job.ok:
            log.debug("read job %s: %s (retention=%s, seed=%s)", job.rel, job.method, job.retention, job.seed)
        else:
            log.warning("job %s is %s: %s", job.rel, job.status, job.reason)
        for w in job.warnings:
            log.warning("job %s: %s", job.rel, w)
    log.info("read %d jobs (%d failed)", len(jobs), sum(not j.ok for j in jobs))
