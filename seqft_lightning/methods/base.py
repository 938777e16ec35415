"""What a method is: a check of its settings and a run that returns its result."""

from __future__ import annotations

import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from omegaconf import DictConfig

if TYPE_CHECKING:  # Lightning is imported only when a run starts
    from seqft_lightning.run_plan import RunPlan
    from seqft_lightning.runner import Runner


@dataclass(frozen=True)
class MethodResult:
    """What a method hands back: ``final``, the test metrics of its final model (the last stage it
    recorded); ``fields``, extra top-level ``metrics.json`` entries (e.g. ``lambda``); ``net``, the
    final model when it is not the runner's net (a merged or negated copy), saved as ``final.pt``."""

    final: dict[str, float]
    fields: dict[str, Any] = field(default_factory=dict)
    net: Any = None
    extra_memory_bytes: int = 0  # what the method keeps beyond the net (e.g. task vectors)
    #: a method with a rule of its own (task negation): that rule as one number to maximise, in place of the
    #: study's ``calibration/selection_score`` (which would reward the accuracy the method means to remove)
    selection_score: float | None = None


@dataclass(frozen=True)
class Method:
    """A method of the study. ``validate(cfg)`` refuses a bad setting (one-line ``ConfigError``) without
    torch; ``train_groups(stages)`` are the class groups trained through the stage loop, where retention
    acts (``[]``: none); ``run_path`` (``"module:function"``) names its run, imported at run start."""

    validate: Callable[[DictConfig], None]
    train_groups: Callable[[list[list[int]]], list[list[int]]]
    run_path: str

    def run(self, runner: "Runner", plan: "RunPlan") -> MethodResult:
        return pkgutil.resolve_name(self.run_path)(runner, plan)
