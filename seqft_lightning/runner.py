"""What every method works with: the data, one way to fit a stage, one way to evaluate and record.
Methods decide *what* to train on and record; the stage mechanics (a fresh optimizer per stage, the
continuous step axis, the retention hooks, the evaluation after every stage) live here once."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from seqft_lightning.cost import Work
from seqft_lightning.data.datamodule import TaskDataModule
from seqft_lightning.evaluation import Evaluation, evaluate
from seqft_lightning.models.classifier import ClassifierModule, Penalty
from seqft_lightning.recorder import RunRecorder
from seqft_lightning.retention import Retention

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Runner:
    """Fits stages and evaluates models for one run (data on the training device): every stage shares
    ``loggers`` (one continuous step axis); ``retention`` acts in :meth:`train_stages` only;
    ``target_classes`` count as "target" in metrics (the rest as "retained")."""

    trainer_cfg: DictConfig
    callbacks_cfg: DictConfig | None
    datamodule: TaskDataModule
    module: ClassifierModule
    recorder: RunRecorder
    loggers: list
    retention: Retention
    target_classes: list[int]
    #: a training epoch whose mean cross-entropy (nats per sample) is above this, or not finite,
    #: marks the run as diverged (chance level is ln(num_classes), 2.3 nats for 10 classes)
    divergence_loss: float = math.inf
    steps_done: int = 0  # optimizer steps so far: the x axis every curve and logger shares
    trained_stages: list[list[int]] = field(default_factory=list)  # groups trained by train_stages, in order
    work: Work = field(default_factory=Work)  # what the fine-tuning did, for its cost
    #: the first training epoch that diverged: ``{"stage", "epoch", "train_loss", "reason"}``, else None
    divergence: dict | None = None

    @property
    def net(self) -> torch.nn.Module:
        return self.module.net

    def _make_trainer(self, max_epochs: int, max_steps: int | None) -> pl.Trainer:
        # Fresh callback objects per Trainer (Lightning callbacks keep per-fit state).
        callbacks = [instantiate(c) for c in (self.callbacks_cfg or {}).values() if c is not None]
        if not self.trainer_cfg.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        # No progress-bar callback (e.g. `callbacks=none`) means no bar, not Lightning's default one.
        bar = any(isinstance(c, ProgressBar) for c in callbacks)
        limits = {"max_epochs": max_epochs} if max_steps is None else {"max_epochs": -1, "max_steps": int(max_steps)}
        return instantiate(self.trainer_cfg, **limits, logger=self.loggers or False, callbacks=callbacks, enable_progress_bar=bar)

    def fit(self, loader: Any, epochs: int, optimizer: Callable, stage: int, penalty: Penalty | None = None,
            max_steps: int | None = None, keep_optimizer: bool = False) -> int:
        """Train the net for ``epochs`` epochs (or exactly ``max_steps`` optimizer steps) on ``loader``
        with ``optimizer`` (fresh unless ``keep_optimizer``), validating on the calibration split after
        every epoch; return the optimizer steps taken (the step axis advances by as many)."""
        self.module.begin_stage(stage, optimizer, self.steps_done, penalty, keep_optimizer=keep_optimizer)
        if (epochs == 0 and max_steps is None) or max_steps == 0:
            return 0
        started = time.perf_counter()
        trainer = self._make_trainer(epochs, max_steps)
        trainer.fit(self.module, train_dataloaders=loader, val_dataloaders=self.datamodule.val_dataloader())
        steps = trainer.global_step
        self.steps_done += steps
        self._add_curves(self.module.take_curves())
        samples, calibration_samples = self.module.take_samples()
        # each rank saw its shard: count them all (one device: the count itself)
        samples = int(trainer.strategy.reduce(torch.tensor(samples, device=self.datamodule.device), reduce_op="sum"))
        if stage == 0:
            self.work.pretrain_steps += steps
        else:
            self.work.optimizer_steps += steps
            self.work.train_samples += samples
            self.work.calibration_samples += calibration_samples  # the validation pass after every epoch (global)
            self.work.train_wall_s += time.perf_counter() - started
        return steps

    def _add_curves(self, curves: Sequence[dict]) -> None:
        """Record ``curves.csv`` rows; keep the first train epoch whose mean loss is not finite or > divergence_loss."""
        self.recorder.curves.extend(curves)
        losses = [(row, float(row["value"])) for row in curves if row["split"] == "train" and row["metric"] == "loss"]
        diverged = [(row, loss) for row, loss in losses if not math.isfinite(loss) or loss > self.divergence_loss]
        if self.divergence is None and diverged:
            row, loss = diverged[0]
            reason = (f"training loss {loss:.3g} nats in stage {row['stage']}, epoch {row['epoch']}"
                      f" ({'not finite' if not math.isfinite(loss) else f'above {self.divergence_loss:g}'})")
            self.divergence = {"stage": int(row["stage"]), "epoch": int(row["epoch"]),
                               "train_loss": loss if math.isfinite(loss) else None, "reason": reason}
            log.warning("diverged: %s; metrics.json marks the run and compare leaves it out of means", reason)

    def train_stages(self, stages: Sequence[Sequence[int]], epochs: int, batch_size: int, optimizer: Callable,
                     steps_per_stage: int | None = None, reset_optimizer: bool = True) -> list[dict[str, float]]:
        """The one stage loop: train on each class group in order (stages 1, 2, ...; stage 0 is the
        baseline) for ``epochs`` epochs or ``steps_per_stage`` steps, through the retention hooks; evaluate
        and record after each. ``reset_optimizer=False`` carries Adam's moments from stage to stage."""
        retention, net, dm = self.retention, self.net, self.datamodule
        retention.on_finetune_start(net, dm)
        per_stage = []
        for stage, classes in enumerate(stages, start=1):
            classes = list(classes)
            loader = retention.wrap_train_loader(dm.task_dataloader(classes, batch_size), stage, classes)
            retention.on_stage_start(net, stage, classes)
            keep = stage > 1 and not reset_optimizer
            self.fit(loader, epochs, optimizer, stage=stage, penalty=retention.penalty, max_steps=steps_per_stage, keep_optimizer=keep)
            retention.on_stage_end(net, stage, classes, dm)
            self.trained_stages.append(classes)
            per_stage.append(self.record_stage(stage, classes))
        return per_stage

    def evaluate(self, net: torch.nn.Module | None = None, split: str = "test", counted: bool = True) -> Evaluation:
        """Evaluate ``net`` (default: the one trained) on the ``test``, ``calibration`` or ``estimation``
        split; a calibration evaluation counts as the method's work unless ``counted`` is False."""
        dm = self.datamodule
        loaders = {"test": dm.test_dataloader, "calibration": dm.calibration_dataloader, "estimation": dm.estimation_dataloader}
        net = self.net if net is None else net
        evaluation = evaluate(net.to(dm.device), loaders[split](), self.module.num_classes)
        if split == "calibration" and counted:
            self.work.calibration_samples += int(evaluation.confusion.sum())
        return evaluation

    def record_stage(self, stage: int, trained: Sequence[int] | str, net: torch.nn.Module | None = None) -> dict[str, float]:
        """Evaluate ``net`` on test, calibration and estimation, record it as ``stage`` and log it;
        return its metrics. Not counted as work: the stage's last validation epoch, or the λ search
        that chose the model, has just evaluated it on calibration (stage 0 belongs to pretraining)."""
        evaluation = self.evaluate(net)
        metrics = evaluation.metrics(self.target_classes)
        for split, labels in (("calibration", self.datamodule.calib_y), ("estimation", self.datamodule.estim_y)):
            if len(labels):
                metrics.update(self.evaluate(net, split=split, counted=False).metrics(self.target_classes, prefix=split))
        self.recorder.record_stage(stage, trained, metrics, evaluation)
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if "_class_" not in k or "/acc_class" in k}, step=self.steps_done)
        return metrics

    def adopt_pretraining(self, curves: Sequence[dict], steps: int) -> None:
        """Continue from a cached baseline: its pretraining curve and ``steps`` become stage 0."""
        self._add_curves(curves)
        self.steps_done = self.work.pretrain_steps = int(steps)
        for row in curves:
            for logger in self.loggers:
                logger.log_metrics({f"{row['split']}/{row['metric']}": row["value"]}, step=row["step"])
