"""The LightningModule that every method trains: cross-entropy plus an optional penalty.

It wraps a plain ``nn.Module`` (``net``) and keeps training cheap: no ``self.log`` per step (a host
sync each call); train loss and accuracy accumulate on the device and reach the logger every
``log_every_n_steps`` steps and at epoch end. Validation runs on the calibration split."""

from __future__ import annotations

from typing import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix

from seqft_lightning.contract import VAL
from seqft_lightning.metrics import group_row

OptimizerFactory = Callable[..., torch.optim.Optimizer]
#: ``penalty(net, x, y, logits) -> scalar tensor or None``, added to the cross-entropy (nats).
Penalty = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


class ClassifierModule(pl.LightningModule):
    """Train ``net`` (exposing ``num_classes``) with cross-entropy (+ penalty); log calibration metrics
    after each epoch and the train loss every ``log_every_n_steps`` steps."""

    def __init__(self, net: nn.Module, log_every_n_steps: int = 50):
        super().__init__()
        self.net = net
        self.num_classes = int(net.num_classes)
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.val_confusion = MulticlassConfusionMatrix(self.num_classes)
        self.stage = 0
        self.step_offset = 0
        self.optimizer_factory: OptimizerFactory | None = None
        self.penalty: Penalty | None = None
        self.keep_optimizer = False
        self._optimizer: torch.optim.Optimizer | None = None
        self._curves: list[dict] = []
        self._samples = 0  # training samples through forward and backward since take_samples()
        self._val_samples = 0  # calibration samples evaluated since take_samples()
        self._train_sums = {"seen": 0}  # on_train_epoch_start sets the device accumulators

    def begin_stage(self, stage: int, optimizer: OptimizerFactory, step_offset: int, penalty: Penalty | None = None,
                    keep_optimizer: bool = False) -> None:
        """Start stage ``stage`` (0 = pretraining) with ``optimizer`` (a partial taking ``params=``),
        ``penalty`` added to every step's loss, the step axis at ``step_offset``; ``keep_optimizer``:
        continue with the previous stage's optimizer and its state (Adam's moments)."""
        self.stage, self.optimizer_factory, self.penalty = int(stage), optimizer, penalty
        self.step_offset = int(step_offset)
        self.keep_optimizer = bool(keep_optimizer) and self._optimizer is not None

    def take_samples(self) -> tuple[int, int]:
        """``(training samples through forward and backward, calibration samples evaluated)`` since the last call."""
        samples = (self._samples, self._val_samples)
        self._samples = self._val_samples = 0
        return samples

    def take_curves(self) -> list[dict]:
        """The ``curves.csv`` rows recorded since the last call (the module keeps none)."""
        rows, self._curves = self._curves, []
        return rows

    def _log_scalars(self, metrics: dict[str, float], step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        self._train_sums = {"loss": torch.zeros((), device=self.device),
                            "correct": torch.zeros((), dtype=torch.long, device=self.device), "seen": 0}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(x)
        ce = F.cross_entropy(logits, y)
        extra = None if self.penalty is None else self.penalty(self.net, x, y, logits)
        loss = ce if extra is None else ce + extra
        sums = self._train_sums
        self._samples += len(y)
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
        self._add_curve_points("train", {"loss": loss, "acc": acc})

    def _add_curve_points(self, split: str, values: dict[str, float]) -> None:
        step, epoch = self.step_offset + self.trainer.global_step, self.current_epoch  # the run's continuous axis
        for metric, value in values.items():
            self._curves.append({"stage": self.stage, "epoch": epoch, "step": step, "split": split, "metric": metric, "value": value})
        self._log_scalars({f"{split}/{metric}": value for metric, value in values.items()}, step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.keep_optimizer:
            return self._optimizer
        if self.optimizer_factory is None:
            raise RuntimeError("ClassifierModule has no optimizer; call begin_stage(...) first")
        self._optimizer = self.optimizer_factory(params=self.net.parameters())
        return self._optimizer

    def on_validation_epoch_start(self) -> None:
        self.val_confusion.reset()
        self._val_loss = torch.zeros(self.num_classes, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self._val_loss.index_add_(0, y, F.cross_entropy(logits, y, reduction="none").double())
        self.val_confusion.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        confusion = self.val_confusion.compute().cpu()  # torchmetrics sums it over DDP ranks
        self.val_confusion.reset()
        if confusion.sum() == 0 or self.trainer.sanity_checking:
            return
        loss = self.trainer.strategy.reduce(self._val_loss, reduce_op="sum")  # over DDP ranks (one device: itself)
        self._val_samples += int(confusion.sum())
        row = group_row(confusion, loss.cpu(), range(self.num_classes))
        self._add_curve_points(VAL, {k: row[k] for k in ("acc", "precision", "recall", "f1", "loss")})
