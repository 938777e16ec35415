"""Learning without Forgetting (Li & Hoiem 2017), single shared head: a frozen copy of the net taken
at ``on_stage_start`` is the teacher until ``on_stage_end``; ``penalty = α · T² · KL(softmax(teacher(x)
/ T) ‖ softmax(student(x) / T))``, averaged over the batch (nats); ``T²`` keeps the gradient scale
independent of the temperature. 0 when the logits agree (up to a per-sample constant), > 0 otherwise."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention


class LwF(Retention):
    """Distillation (weight ``alpha`` = α >= 0, softmax ``temperature`` = T > 0) towards the net as each stage began."""

    name = "lwf"
    strength = "alpha"

    def __init__(self, alpha: float = 1.0, temperature: float = 2.0) -> None:
        if alpha < 0 or temperature <= 0:
            raise ValueError(f"need alpha >= 0 and temperature > 0, got {alpha}, {temperature}")
        self.alpha, self.temperature = float(alpha), float(temperature)
        self.teacher: nn.Module | None = None
        self.teacher_samples = 0  # samples through the teacher's forward (cost accounting)
        self.teacher_bytes = 0  # size of the latest teacher copy

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        return self.teacher_samples * forward_per_sample

    def extra_memory_bytes(self) -> int:
        return self.teacher_bytes

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        self.teacher = copy.deepcopy(net).eval().requires_grad_(False)
        self.teacher.zero_grad(set_to_none=True)  # deepcopy copies .grad; the teacher never needs it
        self.teacher_bytes = tensor_bytes(list(self.teacher.parameters()))

    def on_stage_end(self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any) -> None:
        self.teacher = None

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if self.teacher is None:
            return None
        if next(self.teacher.parameters()).device != x.device:
            self.teacher.to(x.device)  # net may be moved to the accelerator after the snapshot
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        self.teacher_samples += len(x)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                      log_target=True, reduction="batchmean")
        return self.alpha * (kl * t * t)
