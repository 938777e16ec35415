"""``train(cfg)``: the one path from a composed config to a finished run.

Check everything (:func:`~seqft_lightning.plan.plan_run`), skip a run that already completed
with the same config (``resume=true``), then run it (:func:`~seqft_lightning.pipeline.run`).
Lightning is imported only when there is work to do, so a refused config or a skipped job costs
about a second. ``train.py`` and the tests call this, and nothing else checks the config again.
"""

from __future__ import annotations

from omegaconf import DictConfig

from seqft_lightning.plan import plan_run
from seqft_lightning.resume import completed_run


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Run the experiment ``cfg`` describes; return ``(metrics, objects)``.

    ``metrics`` is the content of ``metrics.json``; ``objects`` holds the datamodule, module and
    runner (empty when the run was skipped as complete).
    """
    plan = plan_run(cfg)
    if cfg.get("resume"):
        done = completed_run(plan.run_dir, plan.config_hash, plan.code_version)
        if done is not None:
            return done, {}
    from seqft_lightning.pipeline import run

    return run(plan)
