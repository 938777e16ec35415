"""Fine-tuning methods: the pretrained baseline alone, sequential stages, one joint stage.

Sequential and joint run through the same stage loop; they differ only in the list of class
groups they hand it: ``[[3], [4], [7]]`` versus ``[[3, 4, 7]]``. With the defaults both present the
same number of samples: 3 stages × 1000 samples × 10 epochs = 1 stage × 3000 samples × 10 epochs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydra.utils import instantiate

from seqft_lightning.methods.base import MethodResult

if TYPE_CHECKING:
    from seqft_lightning.plan import RunPlan
    from seqft_lightning.runner import Runner


def run_baseline(runner: Runner, plan: RunPlan) -> MethodResult:
    """No fine-tuning: the pretrained model (stage 0) is the result."""
    return MethodResult(final=runner.recorder.stages()[0].metrics)


def stage_steps(plan: RunPlan) -> int | None:
    """Optimizer steps per trained stage, or ``None`` (train ``epochs_per_stage`` epochs).

    ``method.steps_per_stage`` counts steps per entry of ``method.stages``; a method that trains
    fewer, larger stages (joint) gets the same total: ``steps_per_stage × len(stages)``, split
    evenly over its stages.
    """
    steps = plan.cfg.method.get("steps_per_stage")
    if steps is None:
        return None
    return int(steps) * len(plan.stages) // len(plan.train_groups)


def run_stage_loop(runner: Runner, plan: RunPlan) -> MethodResult:
    """Train ``plan.train_groups`` in order through the one stage loop."""
    m = plan.cfg.method
    per_stage = runner.train_stages(
        plan.train_groups, m.epochs_per_stage, m.batch_size, instantiate(m.optimizer),
        steps_per_stage=stage_steps(plan), reset_optimizer=bool(m.get("reset_optimizer", True)),
    )
    return MethodResult(final=per_stage[-1])

