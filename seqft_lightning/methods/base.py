"""What a method is: a check of its settings and a run that returns its result."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from omegaconf import DictConfig

if TYPE_CHECKING:  # Lightning is imported only when a run starts
    from seqft_lightning.plan import RunPlan
    from seqft_lightning.runner import Runner


@dataclass(frozen=True)
class MethodResult:
    """What a method hands back to the pipeline.

    ``final`` is the test metric dict of the run's final model (the last stage it recorded);
    ``fields`` are extra top-level ``metrics.json`` entries (e.g. ``lambda``); ``net`` is the final
    model when it is not the runner's net (a merged or negated copy), saved as ``final.pt``.
    """

    final: dict[str, float]
    fields: dict[str, Any] = field(default_factory=dict)
    net: Any = None
    extra_memory_bytes: int = 0  # what the method keeps beyond the net (e.g. task vectors)


@dataclass(frozen=True)
class Method:
    """A method of the study: its checks, what it trains in the stage loop, and its run.

    ``validate(cfg)`` raises :class:`~seqft_lightning.errors.ConfigError` (one line naming the
    user's key) on a bad setting of this method; it runs before any data is loaded or any model
    trained, and without torch (:mod:`seqft_lightning.methods.settings`). ``train_groups(stages)``
    is the list of class groups the method trains through the stage loop, where a retention
    strategy acts (``[]`` when it trains none there). ``run_path`` (``"module:function"``) is the
    ``run(runner, plan) -> MethodResult`` that trains and records stages through the runner,
    imported when the run starts.
    """

    validate: Callable[[DictConfig], None]
    train_groups: Callable[[list[list[int]]], list[list[int]]]
    run_path: str

    def run(self, runner: "Runner", plan: "RunPlan") -> MethodResult:
        module, function = self.run_path.split(":")
        return getattr(importlib.import_module(module), function)(runner, plan)
