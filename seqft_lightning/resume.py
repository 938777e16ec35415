"""Resuming sweeps: is this run already complete with the same config?

Light on purpose (no torch, no Lightning), so ``train.py`` can skip a finished job in well under
a second before the heavy imports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from seqft_lightning.config import result_hash

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def completed_metrics(run_dir: str | Path, config_hash: str) -> dict | None:
    """The metrics of a finished run in ``run_dir`` whose ``config_hash`` matches, else ``None``."""
    path = Path(run_dir) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and metrics.get("config_hash") == config_hash else None


def completed_run(cfg: DictConfig) -> dict | None:
    """With ``resume=true``: the metrics of this run if it already completed, else ``None``."""
    if not cfg.get("resume"):
        return None
    done = completed_metrics(cfg.paths.output_dir, result_hash(cfg))
    if done is not None:
        log.info("resume: %s is complete with the same config; skipping", cfg.paths.output_dir)
    return done
