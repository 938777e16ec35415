"""Learning without Forgetting (Li & Hoiem 2017), single shared head.

At ``on_stage_start`` a frozen deep copy of the net (the model as it is before
the stage: the pretrained net for stage 0) becomes the teacher.  On every batch

    penalty = α · T² · KL( softmax(teacher(x) / T) ‖ softmax(student(x) / T) )

with the KL averaged over the batch ("batchmean", in nats).  The ``T²`` factor
keeps the gradient scale independent of the temperature (Hinton et al. 2015).
It is 0 when student and teacher logits agree (up to a per-sample constant) and
> 0 otherwise.  The teacher is released at ``on_stage_end``.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention

log = logging.getLogger(__name__)

__all__ = ["LwF", "distillation_kl"]


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, batch mean, in nats."""
    t = float(temperature)
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        log_target=True,
        reduction="batchmean",
    )
    return kl * t * t


class LwF(Retention):
    """Distillation towards the net snapshot taken at the start of each stage.

    Args:
        alpha: weight α of the distillation term (>= 0).
        temperature: softmax temperature T (> 0).
    """

    name = "lwf"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        if alpha < 0 or temperature <= 0:
            raise ValueError(f"need alpha >= 0 and temperature > 0, got {alpha}, {temperature}")
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.teacher: nn.Module | None = None
        self.teacher_samples = 0  # samples through the teacher's forward (cost accounting)
        self.teacher_bytes = 0  # size of the latest teacher copy

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        return self.teacher_samples * forward_per_sample

    def extra_memory_bytes(self) -> int:
        return self.teacher_bytes

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        if self.alpha == 0:
            return "alpha=0: no penalty"
        return super().inactive_reason(has_pool, num_stages)

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "temperature": self.temperature}

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        teacher = copy.deepcopy(net)
        for p in teacher.parameters():
            p.requires_grad_(False)
            p.grad = None  # deepcopy copies .grad; the teacher never needs it
        self.teacher = teacher.eval()
        self.teacher_bytes = tensor_bytes(list(teacher.parameters()))

    def on_stage_end(
        self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any
    ) -> None:
        self.teacher = None

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if self.teacher is None:
            return None
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != x.device:
            self.teacher.to(x.device)  # net may be moved to the accelerator after the snapshot
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        self.teacher_samples += len(x)
        return self.alpha * distillation_kl(logits, teacher_logits, self.temperature)
