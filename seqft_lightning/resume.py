"""Resuming sweeps: is this run already complete with the same config?

Light on purpose (no torch, no Lightning), so ``train.py`` can skip a finished job in well under
a second before the heavy imports.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from seqft_lightning.contract import METRICS_FILE

log = logging.getLogger(__name__)


def completed_run(run_dir: str | Path, config_hash: str) -> dict | None:
    """The metrics of a finished run in ``run_dir`` whose ``config_hash`` matches, else ``None``."""
    path = Path(run_dir) / METRICS_FILE
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not (isinstance(metrics, dict) and metrics.get("config_hash") == config_hash):
        return None
    log.info("resume: %s is complete with the same config; skipping", run_dir)
    return metrics
