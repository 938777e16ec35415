"""Methods of the study, by name (``method.name``): one :class:`~seqft_lightning.methods.base.Method`
each, pairing its torch-free checks (:mod:`.settings`) with its run (``finetune.py``, ``merge.py``),
imported only when a run starts, so a bad config is refused before torch or Lightning load."""

from __future__ import annotations

from seqft_lightning.methods.base import Method, MethodResult
from seqft_lightning.methods.settings import joint_groups, no_groups, sequential_groups
from seqft_lightning.methods.settings import validate_merge, validate_negation, validate_stages_setting

_FINETUNE, _MERGE = "seqft_lightning.methods.finetune", "seqft_lightning.methods.merge"
_MERGING = Method(validate_merge, no_groups, f"{_MERGE}:run_merge")  # methods differ only in `method.merger`

METHODS: dict[str, Method] = {
    "baseline": Method(validate_stages_setting, no_groups, f"{_FINETUNE}:run_baseline"),
    "sequential": Method(validate_stages_setting, sequential_groups, f"{_FINETUNE}:run_stage_loop"),
    "joint": Method(validate_stages_setting, joint_groups, f"{_FINETUNE}:run_stage_loop"),
    **dict.fromkeys(("task_arithmetic", "ties", "dare", "average"), _MERGING),
    "task_negation": Method(validate_negation, no_groups, f"{_MERGE}:run_task_negation"),
}

__all__ = ["METHODS", "Method", "MethodResult"]
