"""The resolved description of one run, as :func:`seqft_lightning.plan.plan_run` checks and builds it
(a module of its own, so that the methods and the planner do not import each other)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


@dataclass(frozen=True)
class RunPlan:
    """One run, resolved and checked."""

    cfg: DictConfig  # the composed config (instantiation targets: data, model, trainer, loggers)
    method_name: str
    method: Any  # seqft_lightning.methods.Method
    stages: list[list[int]]  # ``method.stages``: the study's tasks
    task_classes: list[int]  # the union of the stages, sorted: the "target" classes
    train_groups: list[list[int]]  # what the stage loop trains (sequential: stages; joint: [task_classes])
    retention: Any  # the run's retention strategy (a fresh object; the runner owns it)
    retention_inactive: str | None  # why the retention strategy cannot act in this run (None: it can)
    config_hash: str  # hash of every result-relevant config value (resume compares it)
    run_dir: Path
    code_version: str = ""  # fingerprint of the training code (resume and the baseline key compare it)
