"""Methods of the study, by name (``method.name``): each is ``run(runner, cfg) -> dict``.

A method trains and records stages through the :class:`~seqft_lightning.runner.Runner` and
returns extra top-level keys for ``metrics.json`` (e.g. ``lambda``). The baseline (stage 0) has
already been evaluated and recorded when a method starts.
"""

from seqft_lightning.methods.finetune import run_baseline, run_joint, run_sequential
from seqft_lightning.methods.merge import run_merge, run_task_negation

METHODS = {
    "baseline": run_baseline,
    "sequential": run_sequential,
    "joint": run_joint,
    # Merging methods differ only in their `method.merger` config.
    "task_arithmetic": run_merge,
    "ties": run_merge,
    "dare": run_merge,
    "average": run_merge,
    "task_negation": run_task_negation,
}

__all__ = ["METHODS"]
