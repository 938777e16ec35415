"""``train(cfg)``: the one path from a composed config to a finished run (checked by
:func:`~seqft_lightning.plan.plan_run`, run by :func:`~seqft_lightning.pipeline.run`). Lightning is
imported only when there is work to do, so a refused config or a skipped job costs about a second."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from seqft_lightning.config import resolved_result_config
from seqft_lightning.contract import CONFIG_FILE
from seqft_lightning.interrupts import watching_interrupts
from seqft_lightning.io import atomic_write_json
from seqft_lightning.plan import plan_run
from seqft_lightning.resume import completed_run


def write_config(cfg: DictConfig, run_dir: str | Path) -> None:
    """Write ``config.json``, what compare labels the run by: the resolved, result-relevant config."""
    atomic_write_json(Path(run_dir) / CONFIG_FILE, resolved_result_config(cfg))


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Run the experiment ``cfg`` describes; return ``(metrics, objects)``: the content of
    ``metrics.json``, and the datamodule, module and runner (empty when the run was skipped as complete)."""
    plan = plan_run(cfg)
    write_config(cfg, plan.run_dir)
    if cfg.get("resume") and (done := completed_run(plan.run_dir, plan.config_hash, plan.code_version)) is not None:
        return done, {}
    from seqft_lightning.pipeline import run

    with watching_interrupts():
        return run(plan)
