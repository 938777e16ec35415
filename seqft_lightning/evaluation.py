"""Evaluate a model on a split: the confusion matrix and per-class loss, from which every reported
metric is derived (:func:`seqft_lightning.metrics.flat_metrics`). A plain inference loop: it needs no
optimizer, logger or callback, so no Lightning Trainer. Under DDP each rank evaluates its shard of the
loader and the counts are summed over ranks, so the result describes the whole split once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from seqft_lightning.metrics import flat_metrics


@contextlib.contextmanager
def eval_mode(net: nn.Module) -> Iterator[nn.Module]:
    """``net`` in eval mode for the block; its training flag is restored after."""
    was_training = net.training
    try:
        yield net.eval()
    finally:
        net.train(was_training)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of one model on one split: ``confusion[i, j]`` counts samples of true class
    ``i`` predicted as ``j`` (int64, CPU); ``loss_per_class[i]`` is the summed cross-entropy (nats)
    over the samples of true class ``i``."""

    confusion: torch.Tensor
    loss_per_class: torch.Tensor

    def metrics(self, target_classes: Sequence[int], prefix: str = "test") -> dict[str, float]:
        """The flat metric dict of the run contract (``{prefix}/acc``, ...)."""
        return flat_metrics(self.confusion, self.loss_per_class, target_classes, prefix=prefix)


@torch.inference_mode()
def evaluate(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], num_classes: int) -> Evaluation:
    """Confusion matrix and per-class loss of ``net`` over ``batches`` (summed over DDP ranks)."""
    device = next(net.parameters()).device
    confusion = torch.zeros(num_classes * num_classes, dtype=torch.long, device=device)
    loss = torch.zeros(num_classes, dtype=torch.float64, device=device)
    with eval_mode(net):
        for x, y in batches:
            x, y = x.to(device), y.to(device)
            logits = net(x)
            loss.index_add_(0, y, F.cross_entropy(logits, y, reduction="none").double())
            confusion += torch.bincount(y * num_classes + logits.argmax(1), minlength=num_classes * num_classes)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(confusion)
        dist.all_reduce(loss)
    return Evaluation(confusion.reshape(num_classes, num_classes).cpu(), loss.cpu())
