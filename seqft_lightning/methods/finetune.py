"""Fine-tuning methods: the pretrained baseline alone, sequential stages, one joint stage: the same
stage loop on ``[[3], [4], [7]]`` or ``[[3, 4, 7]]``, so both present the same samples."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra.utils import instantiate

from seqft_lightning.methods.base import MethodResult

if TYPE_CHECKING:
    from seqft_lightning.run_plan import RunPlan
    from seqft_lightning.runner import Runner


def run_baseline(runner: Runner, plan: RunPlan) -> MethodResult:
    """No fine-tuning: the pretrained model (stage 0) is the result."""
    return MethodResult(final=runner.recorder.stages[0].metrics)


def run_stage_loop(runner: Runner, plan: RunPlan) -> MethodResult:
    """Train ``plan.train_groups`` in order through the one stage loop. ``method.steps_per_stage``
    (optimizer steps; unset: ``epochs_per_stage`` epochs) counts per entry of ``method.stages``: joint
    gets the same total, ``steps_per_stage × len(stages)``, split evenly over its stages."""
    m = plan.cfg.method
    steps = m.get("steps_per_stage")
    per_stage = runner.train_stages(
        plan.train_groups, m.epochs_per_stage, m.batch_size, instantiate(m.optimizer),
        steps_per_stage=None if steps is None else int(steps) * len(plan.stages) // len(plan.train_groups),
        reset_optimizer=bool(m.get("reset_optimizer", True)),
    )
    return MethodResult(final=per_stage[-1])
