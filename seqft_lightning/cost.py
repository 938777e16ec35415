"""What a run's fine-tuning costs: optimizer steps, samples, FLOPs, extra memory.

FLOPs are matmul FLOPs as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (a
multiply-add is 2 FLOPs; elementwise work such as Adam's update or a penalty's square is not
counted), measured once per run on one step of each kind and multiplied by how often that kind
ran: a training step (forward, loss, backward) per sample, an inference forward per sample (the
calibration curves and evaluations, a λ search, LwF's teacher; test evaluations are reporting and
not counted), and a per-sample gradient for EWC's Fisher estimate. Pretraining is not counted: the baseline is shared
by every method (``cost/pretrain_steps`` says how large it was).

The counts are deterministic and go into ``metrics.json`` under ``cost`` (keys ``cost/...``); the
wall time and device, which are not, go into ``run_info.json`` under the same prefix.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _counted(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def flops_per_sample(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(training step, inference forward)`` FLOPs per sample of ``net`` on the batch ``x, y``.

    Measured on a copy, so the net, its gradients and the random state are untouched.
    """
    probe = copy.deepcopy(net).train()
    n = len(y)

    def step() -> None:
        F.cross_entropy(probe(x), y).backward()

    def forward() -> None:
        with torch.no_grad():
            probe(x)

    return _counted(step) / n, _counted(forward) / n


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors (or a dict of them)."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return int(sum(t.numel() * t.element_size() for t in values))


@dataclass
class Work:
    """What a run's fine-tuning did, in counts, as the runner recorded it (stage 0, pretraining,
    only as ``pretrain_steps``). Every count is over the whole run and, under DDP, over all ranks.

    Counted once each: a training step's samples (replayed ones included); a calibration sample
    through an inference forward that the method needed (the validation pass after every training
    epoch, a λ search, negation's reference). Not counted: test evaluations (reporting), the
    estimation part (reporting), and the calibration evaluation a stage's record reads, which is
    the model the last validation epoch (or the λ search) has just evaluated.
    """

    pretrain_steps: int = 0
    optimizer_steps: int = 0
    train_samples: int = 0
    calibration_samples: int = 0
    train_wall_s: float = 0.0


def cost_metrics(work: Work, train_per_sample: float, forward_per_sample: float, retention_flops: float,
                 extra_memory_bytes: int) -> dict[str, float]:
    """The deterministic ``cost/...`` entries of ``metrics.json``: a pure function of the recorded
    ``work``, the FLOPs of one training step and one inference forward per sample, the retention
    strategy's own FLOPs (teacher forwards, Fisher gradients) and the extra bytes it and the method keep."""
    train = work.train_samples * train_per_sample + retention_flops
    evaluation = work.calibration_samples * forward_per_sample
    return {
        "cost/optimizer_steps": work.optimizer_steps,
        "cost/train_samples": work.train_samples,
        "cost/train_flops": train,
        "cost/eval_flops": evaluation,
        "cost/total_flops": train + evaluation,
        "cost/extra_memory_bytes": int(extra_memory_bytes),
        "cost/pretrain_steps": work.pretrain_steps,
    }
