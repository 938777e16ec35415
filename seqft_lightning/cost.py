"""What a run's fine-tuning costs: optimizer steps, samples, FLOPs, extra memory. FLOPs are matmul
FLOPs as :class:`torch.utils.flop_counter.FlopCounterMode` counts them (a multiply-add is 2;
elementwise work is not counted), measured once per run on one step of each kind and multiplied by
how often it ran: a training step per sample, an inference forward per sample (calibration
evaluations, a λ search, LwF's teacher; test evaluations are reporting), a per-sample gradient for
EWC's Fisher. Pretraining, shared by every method, is not counted (``cost/pretrain_steps`` says how
large it was). The counts go into ``metrics.json`` (``cost/...``); wall time and device, which are
not deterministic, into ``run_info.json``."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def flops_per_sample(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``(training step, inference forward)`` FLOPs per sample of ``net`` on the batch ``x, y``,
    measured on a copy (the net, its gradients and the random state are untouched)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(net).train()
    with FlopCounterMode(display=False) as step:
        F.cross_entropy(probe(x), y).backward()
    with FlopCounterMode(display=False) as forward, torch.no_grad():
        probe(x)
    return float(step.get_total_flops()) / len(y), float(forward.get_total_flops()) / len(y)


def tensor_bytes(tensors) -> int:
    """Bytes held by an iterable of tensors (or a dict of them)."""
    values = tensors.values() if isinstance(tensors, dict) else tensors
    return int(sum(t.numel() * t.element_size() for t in values))


@dataclass
class Work:
    """What a run's fine-tuning did, in counts over the whole run (and all DDP ranks); pretraining
    only as ``pretrain_steps``. Counted: a training step's samples (replayed ones included); a
    calibration sample through a forward the method needed (validation after every epoch, a λ
    search, negation's reference). Not counted: test and estimation evaluations (reporting), and the
    calibration evaluation of a stage's record (the model just evaluated by the last validation)."""

    pretrain_steps: int = 0
    optimizer_steps: int = 0
    train_samples: int = 0
    calibration_samples: int = 0
    train_wall_s: float = 0.0


def cost_metrics(work: Work, train_per_sample: float, forward_per_sample: float, retention_flops: float,
                 extra_memory_bytes: int) -> dict[str, float]:
    """The deterministic ``cost/...`` entries of ``metrics.json`` from the recorded ``work``, the FLOPs
    per sample of a training step and a forward, the retention strategy's own FLOPs and the extra
    bytes it and the method keep."""
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
