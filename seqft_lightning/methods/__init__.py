"""Methods of the study, by name (``method.name``).

Each method is a :class:`~seqft_lightning.methods.base.Method`: ``validate(cfg)``, which refuses
its own bad settings before any work, and ``run(runner, plan) -> MethodResult``. The baseline
(stage 0) has already been evaluated and recorded when ``run`` starts.

The registry names each method's module and imports it on use; method modules do not import
Lightning at import time, so validating a config stays fast.
"""

from __future__ import annotations

import importlib

from seqft_lightning.methods.base import Method, MethodResult

METHODS: dict[str, str] = {
    "baseline": "seqft_lightning.methods.finetune:BASELINE",
    "sequential": "seqft_lightning.methods.finetune:SEQUENTIAL",
    "joint": "seqft_lightning.methods.finetune:JOINT",
    # Merging methods differ only in their `method.merger` config.
    "task_arithmetic": "seqft_lightning.methods.merge:MERGE",
    "ties": "seqft_lightning.methods.merge:MERGE",
    "dare": "seqft_lightning.methods.merge:MERGE",
    "average": "seqft_lightning.methods.merge:MERGE",
    "task_negation": "seqft_lightning.methods.merge:TASK_NEGATION",
}


def get_method(name: str) -> Method:
    """The :class:`Method` registered as ``name`` (a ``KeyError`` for unknown names)."""
    module, attribute = METHODS[name].split(":")
    return getattr(importlib.import_module(module), attribute)


__all__ = ["METHODS", "Method", "MethodResult", "get_method"]
