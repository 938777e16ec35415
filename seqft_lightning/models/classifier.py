"""The LightningModule that every method trains: K >= 1 networks of one architecture, stacked
(:class:`~seqft_lightning.models.stacked.StackedNets`), each with cross-entropy plus its optional penalty.

A batch is ``(x [K, B, ...], y [K, B])``: model ``k`` trains on ``x[k]``. The loss is the sum of the
K models' losses, so model ``k``'s gradient is its own loss's gradient; one optimizer steps all
parameters (element-wise, so per model as if alone). Nothing syncs with the host inside a step:
train losses and accuracy accumulate on the device and reach each model's loggers at epoch end.
Validation runs on each model's calibration split (stacked the same way)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Callable

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from seqft_lightning.contract import VAL
from seqft_lightning.metrics import group_row
from seqft_lightning.models.stacked import StackedNets

OptimizerFactory = Callable[..., torch.optim.Optimizer]
#: ``penalty(net, x, y, logits) -> scalar tensor or None``, added to the cross-entropy (nats).
Penalty = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], "torch.Tensor | None"]


class ClassifierModule(pl.LightningModule):
    """Train the ``nets`` (one network, or K of one architecture) with cross-entropy (+ each one's
    penalty); record per model the train loss and accuracy per epoch, the calibration metrics after
    each epoch and the train loss of every ``log_every_n_steps``-th step."""

    def __init__(self, nets: nn.Module | Sequence[nn.Module], log_every_n_steps: int = 50):
        super().__init__()
        self.stack = StackedNets([nets] if isinstance(nets, nn.Module) else list(nets))
        self.num_classes = self.stack.num_classes
        self.log_every_n_steps = max(1, int(log_every_n_steps))
        self.stage = 0
        self.step_offsets = [0] * len(self.stack)
        self.optimizer_factory: OptimizerFactory | None = None
        self.penalties: list[Penalty | None] = [None] * len(self.stack)
        self.member_loggers: list[list] | None = None
        self._optimizer_states: list[dict] | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._curves: list[list[dict]] = [[] for _ in self.stack.nets]
        self._samples = [0] * len(self.stack)  # training samples through forward and backward, per model
        self._val_samples = [0] * len(self.stack)  # calibration samples evaluated, per model

    @property
    def nets(self) -> list[nn.Module]:
        return list(self.stack.nets)

    @property
    def net(self) -> nn.Module:
        """The first (for a stack of one, the only) network."""
        return self.stack.nets[0]

    def begin_stage(self, stage: int, optimizer: OptimizerFactory, step_offsets: int | Sequence[int],
                    penalties: Penalty | Sequence[Penalty | None] | None = None,
                    optimizer_states: Sequence[dict] | None = None, loggers: Sequence[list] | None = None) -> None:
        """Start stage ``stage`` (0 = pretraining) with ``optimizer`` (a partial taking ``params=``), each
        model's step axis at its ``step_offsets`` entry and its penalty added to its loss; with
        ``optimizer_states`` (from :meth:`optimizer_states`), continue each model's optimizer state
        (Adam's moments); ``loggers``: each model's loggers (default: the Trainer's)."""
        k = len(self.stack)
        self.stage, self.optimizer_factory = int(stage), optimizer
        self.step_offsets = [int(step_offsets)] * k if isinstance(step_offsets, int) else [int(s) for s in step_offsets]
        self.penalties = list(penalties) if isinstance(penalties, (list, tuple)) else [penalties] * k
        self._optimizer_states = None if optimizer_states is None else list(optimizer_states)
        self.member_loggers = None if loggers is None else [list(group) for group in loggers]
        if not len(self.step_offsets) == len(self.penalties) == k:
            raise ValueError(f"begin_stage: {k} models but {len(self.step_offsets)} step offsets and {len(self.penalties)} penalties")

    def optimizer_states(self) -> list[dict]:
        """Each model's optimizer state after the fit, ``{parameter index: state}`` (for ``optimizer_states=``)."""
        state = self._optimizer.state if self._optimizer is not None else {}
        return [{i: state[p] for i, p in enumerate(net.parameters()) if p in state} for net in self.stack.nets]

    def take_samples(self) -> list[tuple[int, int]]:
        """Per model, ``(training samples through forward and backward, calibration samples evaluated)``
        since the last call."""
        samples = list(zip(self._samples, self._val_samples))
        self._samples, self._val_samples = [0] * len(self.stack), [0] * len(self.stack)
        return samples

    def take_curves(self) -> list[list[dict]]:
        """Per model, the ``curves.csv`` rows recorded since the last call (the module keeps none)."""
        rows, self._curves = self._curves, [[] for _ in self.stack.nets]
        return rows

    def _log_scalars(self, k: int, metrics: dict[str, float], step: int) -> None:
        loggers = self.member_loggers[k] if self.member_loggers is not None else [self.logger] if self.logger else []
        for logger in loggers:
            logger.log_metrics(metrics, step=step)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stack(x)

    def on_train_epoch_start(self) -> None:
        k = len(self.stack)
        self._train_loss = torch.zeros(k, device=self.device)
        self._train_correct = torch.zeros(k, dtype=torch.long, device=self.device)
        self._train_seen = 0
        self._step_losses: list[tuple[int, torch.Tensor]] = []  # (global step, [K] losses), logged at epoch end

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.stack(x)  # [K, B, C]
        k, b = y.shape
        ce = F.cross_entropy(logits.reshape(k * b, -1), y.reshape(-1), reduction="none").view(k, b).mean(1)
        extras = [None if p is None else p(net, x[i], y[i], logits[i]) for i, (p, net) in enumerate(zip(self.penalties, self.stack.nets))]
        losses = ce if all(e is None for e in extras) else torch.stack([c if e is None else c + e for c, e in zip(ce, extras)])
        detached = ce.detach()
        self._train_loss.add_(detached, alpha=b)
        self._train_correct.add_((logits.detach().argmax(2) == y).sum(1))
        self._train_seen += b
        if batch_idx % self.log_every_n_steps == 0:
            self._step_losses.append((self.trainer.global_step, detached))
        return losses.sum()

    def on_train_epoch_end(self) -> None:
        if self._train_seen == 0:
            return
        loss, correct = self._train_loss.cpu().tolist(), self._train_correct.cpu().tolist()  # the epoch's one host sync
        step_losses = [(step, values.cpu().tolist()) for step, values in self._step_losses]
        for k in range(len(self.stack)):
            self._samples[k] += self._train_seen
            for step, values in step_losses:
                self._log_scalars(k, {"train/loss_step": values[k], "train/stage": float(self.stage)}, self.step_offsets[k] + step)
            self._add_curve_points(k, "train", {"loss": loss[k] / self._train_seen, "acc": correct[k] / self._train_seen})

    def _add_curve_points(self, k: int, split: str, values: dict[str, float]) -> None:
        step, epoch = self.step_offsets[k] + self.trainer.global_step, self.current_epoch  # the run's continuous axis
        for metric, value in values.items():
            self._curves[k].append({"stage": self.stage, "epoch": epoch, "step": step, "split": split, "metric": metric, "value": value})
        self._log_scalars(k, {f"{split}/{metric}": value for metric, value in values.items()}, step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_factory is None:
            raise RuntimeError("ClassifierModule has no optimizer; call begin_stage(...) first")
        self._optimizer = self.optimizer_factory(params=[p for net in self.stack.nets for p in net.parameters()])
        for net, saved in zip(self.stack.nets, self._optimizer_states or []):
            for i, p in enumerate(net.parameters()):
                if i in saved:
                    self._optimizer.state[p] = saved[i]
        return self._optimizer

    def on_validation_epoch_start(self) -> None:
        k, c = len(self.stack), self.num_classes
        self._val_confusion = torch.zeros(k * c * c, dtype=torch.long, device=self.device)
        self._val_loss = torch.zeros(k * c, dtype=torch.float64, device=self.device)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.stack(x)
        k, b = y.shape
        c = self.num_classes
        rows = (torch.arange(k, device=y.device)[:, None] * c + y).reshape(-1)  # (model, true class)
        self._val_loss.index_add_(0, rows, F.cross_entropy(logits.reshape(k * b, c), y.reshape(-1), reduction="none").double())
        self._val_confusion += torch.bincount(rows * c + logits.argmax(2).reshape(-1), minlength=k * c * c)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        k, c = len(self.stack), self.num_classes
        reduce = self.trainer.strategy.reduce  # sums over DDP ranks (one device: itself)
        confusion = reduce(self._val_confusion, reduce_op="sum").view(k, c, c).cpu()
        loss = reduce(self._val_loss, reduce_op="sum").view(k, c).cpu()
        for i in range(k):
            if confusion[i].sum() == 0:
                continue
            self._val_samples[i] += int(confusion[i].sum())
            row = group_row(confusion[i], loss[i], range(c))
            self._add_curve_points(i, VAL, {m: row[m] for m in ("acc", "precision", "recall", "f1", "loss")})
