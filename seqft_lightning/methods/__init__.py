"""Methods of the study, by name (``method.name``): each is ``run(runner, cfg) -> dict``.

A method trains and records stages through the :class:`~seqft_lightning.runner.Runner` and
returns extra top-level keys for ``metrics.json`` (e.g. ``lambda``). The baseline (stage 0) has
already been evaluated and recorded when a method starts.

The registry names functions as ``"module:function"`` and imports them on use, so that checking
a config (``method.name in METHODS``) does not import Lightning.
"""

from __future__ import annotations

import importlib
from typing import Callable

METHODS: dict[str, str] = {
    "baseline": "seqft_lightning.methods.finetune:run_baseline",
    "sequential": "seqft_lightning.methods.finetune:run_sequential",
    "joint": "seqft_lightning.methods.finetune:run_joint",
    # Merging methods differ only in their `method.merger` config.
    "task_arithmetic": "seqft_lightning.methods.merge:run_merge",
    "ties": "seqft_lightning.methods.merge:run_merge",
    "dare": "seqft_lightning.methods.merge:run_merge",
    "average": "seqft_lightning.methods.merge:run_merge",
    "task_negation": "seqft_lightning.methods.merge:run_task_negation",
}


def get_method(name: str) -> Callable:
    """The ``run(runner, cfg)`` function of method ``name``."""
    module, function = METHODS[name].split(":")
    return getattr(importlib.import_module(module), function)


__all__ = ["METHODS", "get_method"]
