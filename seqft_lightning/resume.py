"""Resuming sweeps: is this run already complete with the same config? No torch, no Lightning, so
``train.py`` skips a finished job in well under a second."""

from __future__ import annotations

import logging
from pathlib import Path

from seqft_lightning.contract import METRICS_FILE
from seqft_lightning.io import read_json

log = logging.getLogger(__name__)

#: Run folders this process skipped as complete (the sweep's progress line marks them).
_SKIPPED: set[Path] = set()


def was_skipped(run_dir: str | Path) -> bool:
    """Whether this process skipped ``run_dir`` as complete (``resume=true``)."""
    return Path(run_dir).resolve() in _SKIPPED


def completed_run(run_dir: str | Path, config_hash: str, code_version: str) -> dict | None:
    """The metrics of a finished run in ``run_dir`` computed from the same config (``config_hash``)
    by the same training code (``code_version``), else ``None``; the log says why a run is redone."""
    if not (metrics := read_json(Path(run_dir) / METRICS_FILE)):
        return None
    if metrics.get("config_hash") != config_hash:
        log.info("resume: %s holds results of another config; recomputing", run_dir)
        return None
    if metrics.get("code_version") != code_version:
        log.info("resume: %s was computed by other training code (version %s, now %s); recomputing",
                 run_dir, metrics.get("code_version"), code_version)
        return None
    log.info("resume: %s is complete with the same config and code; skipping", run_dir)
    _SKIPPED.add(Path(run_dir).resolve())
    return metrics
