"""The LightningModule that every method trains: cross-entropy (plus a retention penalty).

It wraps a plain ``nn.Module`` (``net``) and keeps training cheap on purpose: no ``self.log``
per step (a host sync and dict work each call); train loss and accuracy accumulate on the device
and reach the logger every ``log_every_n_steps`` steps and at epoch end.

Steps are counted on one continuous axis across stages: ``step_offset`` holds the optimizer steps
of earlier stages, so TensorBoard overlays pretraining and every fine-tuning stage of a run.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from seqft_lightning.metrics import flat_metrics

log = logging.getLogger(__name__)

OptimizerFactory = Callable[..., torch.optim.Optimizer]


class ClassifierModule(pl.LightningModule):
    """Train ``net`` with cross-entropy; evaluate with torchmetrics.

    Args:
        net: the classifier (e.g. :class:`~seqft_lightning.models.components.MLP`).
        optimizer: a partial optimizer (``_partial_: true`` in Hydra) finished with ``params=``.
            Replaced per stage by :meth:`begin_stage`; a fresh optimizer is built per ``fit``.
        target_classes: classes counted as "target" in test metrics (the rest are "retained").
        retention: object whose ``penalty(net, x, y, logits)`` is added to the loss (``None``: none).
        log_every_n_steps: interval of train-loss points sent to the logger.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        target_classes: Sequence[int] = (),
        retention: Any = None,
        log_every_n_steps: int = 50,
    ):
        super().__init__()
        self.net = net
        self.optimizer_factory = optimizer
        self.target_classes = [int(c) for c in target_classes]
        self.retention = retention
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        num_classes = net.num_classes
        self.num_classes = num_classes
        self.val_metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, average="micro"),
                "precision": MulticlassPrecision(num_classes, average="macro"),
                "recall": MulticlassRecall(num_classes, average="macro"),
                "f1": MulticlassF1Score(num_classes, average="macro"),
            }
        )
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self.stage = 0
        self.step_offset = 0
        self.history: list[dict] = []  # curves.csv rows: stage, epoch, step, split, metric, value
        self.test_results: dict[str, float] = {}
        self.last_confusion: torch.Tensor | None = None
        self.last_loss_per_class: torch.Tensor | None = None
        self._reset_train_sums()

    # -- stage bookkeeping ------------------------------------------------------------------
    def begin_stage(self, stage: int, optimizer: OptimizerFactory) -> None:
        """Start stage ``stage`` (0 = pretraining) with a fresh optimizer built from ``optimizer``."""
        self.stage, self.optimizer_factory = int(stage), optimizer

    def end_stage(self, steps: int) -> None:
        """Advance the continuous step axis by the ``steps`` optimizer steps of this stage."""
        self.step_offset += int(steps)

    @property
    def continuous_step(self) -> int:
        return self.step_offset + (self.trainer.global_step if self._trainer is not None else 0)

    def _log_scalars(self, metrics: dict[str, float], step: int) -> None:
        if self._trainer is not None and self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    # -- training ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _reset_train_sums(self) -> None:
        # A plain dict of in-place accumulators: nn.Module.__setattr__ is slow on the hot path.
        self._train_sums = {
            "loss": torch.zeros((), device=self.device),
            "correct": torch.zeros((), dtype=torch.long, device=self.device),
            "seen": 0,
        }

    def on_train_epoch_start(self) -> None:
        self._reset_train_sums()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        ce = F.cross_entropy(logits, y)
        loss = ce
        if self.retention is not None:
            penalty = self.retention.penalty(self.net, x, y, logits)
            if penalty is not None:
                loss = loss + penalty
        sums = self._train_sums
        sums["loss"].add_(ce.detach(), alpha=len(y))
        sums["correct"].add_((logits.detach().argmax(1) == y).sum())
        sums["seen"] += len(y)
        if batch_idx % self.log_every_n_steps == 0:  # a host sync, so only every n steps
            step = self.step_offset + self.trainer.global_step
            self._log_scalars({"train/loss_step": float(ce.detach()), "train/stage": float(self.stage)}, step)
        return loss

    def on_train_epoch_end(self) -> None:
        sums = self._train_sums
        if sums["seen"] == 0:
            return
        loss, acc = float(sums["loss"]) / sums["seen"], float(sums["correct"]) / sums["seen"]
        self._record("train", {"loss": loss, "acc": acc})

    def _record(self, split: str, values: dict[str, float]) -> None:
        step, epoch = self.continuous_step, self.current_epoch
        for metric, value in values.items():
            self.history.append(
                {"stage": self.stage, "epoch": epoch, "step": step, "split": split, "metric": metric, "value": value}
            )
        self._log_scalars({f"{split}/{metric}": value for metric, value in values.items()}, step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise RuntimeError("ClassifierModule has no optimizer; call begin_stage(stage, optimizer) first")
        return self.optimizer_factory(params=self.net.parameters())

    # -- validation (calibration split) -----------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_loss_sum, self._val_seen = torch.zeros((), device=self.device), 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self._val_loss_sum += F.cross_entropy(logits, y, reduction="sum")
        self._val_seen += len(y)
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        if self._val_seen == 0 or self.trainer.sanity_checking:
            self.val_metrics.reset()
            return
        values = {name: float(v) for name, v in self.val_metrics.compute().items()}
        # Under DDP each rank saw a shard: sum the losses and counts (torchmetrics syncs itself).
        loss_sum = self._sum_over_ranks(self._val_loss_sum)
        seen = self._sum_over_ranks(torch.tensor(float(self._val_seen), device=self.device))
        values["loss"] = float(loss_sum) / float(seen)
        self.val_metrics.reset()
        self._record("val", values)

    def _sum_over_ranks(self, value: torch.Tensor) -> torch.Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return value
        return self.trainer.strategy.reduce(value, reduce_op="sum")

    # -- test -------------------------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self._test_loss = torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        losses = F.cross_entropy(logits, y, reduction="none").double()
        self._test_loss.index_add_(0, y, losses)
        self.test_confusion.update(logits, y)

    def on_test_epoch_end(self) -> None:
        confusion = self.test_confusion.compute().cpu()
        self.last_confusion, self.last_loss_per_class = confusion, self._sum_over_ranks(self._test_loss).cpu()
        self.test_results = flat_metrics(confusion, self.last_loss_per_class, self.target_classes, prefix="test")
