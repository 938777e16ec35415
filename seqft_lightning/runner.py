"""What every method works with: the data, one way to fit a stage, one way to evaluate and record.

Methods (:mod:`seqft_lightning.methods`) only decide *what* to train on and *what* to record; the
stage mechanics (a fresh optimizer per stage, the continuous step axis, the retention strategy's
hooks, the test evaluation after every stage) live here once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from seqft_lightning.cost import Cost
from seqft_lightning.data.datamodule import TaskDataModule
from seqft_lightning.evaluation import Evaluation, evaluate
from seqft_lightning.models.classifier import ClassifierModule, Penalty
from seqft_lightning.recorder import RunRecorder
from seqft_lightning.retention import Retention

log = logging.getLogger(__name__)


@dataclass(eq=False)
class Runner:
    """Fits stages and evaluates models for one run.

    ``trainer_cfg``/``callbacks_cfg`` are the ``trainer``/``callbacks`` config nodes; the data is
    set up on the training device; ``module.net`` is the model; every stage shares ``loggers``
    (one continuous step axis); the ``retention`` strategy acts in :meth:`train_stages` only;
    ``target_classes`` are the classes counted as "target" in metrics (the rest are "retained").
    """

    trainer_cfg: DictConfig
    callbacks_cfg: DictConfig | None
    datamodule: TaskDataModule
    module: ClassifierModule
    recorder: RunRecorder
    loggers: list
    retention: Retention
    target_classes: list[int]
    steps_done: int = 0  # optimizer steps so far: the x axis every curve and logger shares
    trained_stages: list[list[int]] = field(default_factory=list)  # groups trained by train_stages, in order
    cost: Cost = field(default_factory=Cost)

    @property
    def net(self) -> torch.nn.Module:
        return self.module.net

    def _callbacks(self) -> list:
        # Fresh callback objects per Trainer: Lightning callbacks keep per-fit state.
        callbacks = [instantiate(c) for c in (self.callbacks_cfg or {}).values() if c is not None]
        if not self.trainer_cfg.get("enable_progress_bar", True):
            # `trainer.enable_progress_bar=false` alone turns the bar off (Lightning would refuse
            # a progress-bar callback next to it).
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        return callbacks

    def _make_trainer(self, max_epochs: int, max_steps: int | None) -> pl.Trainer:
        callbacks = self._callbacks()
        # No progress-bar callback (e.g. `callbacks=none`) means no bar, not Lightning's default one.
        bar = any(isinstance(c, ProgressBar) for c in callbacks)
        limits = {"max_epochs": max_epochs} if max_steps is None else {"max_epochs": -1, "max_steps": int(max_steps)}
        return instantiate(self.trainer_cfg, **limits, logger=self.loggers or False, callbacks=callbacks, enable_progress_bar=bar)

    def fit(self, loader: Any, epochs: int, optimizer: Callable, stage: int, penalty: Penalty | None = None,
            max_steps: int | None = None, keep_optimizer: bool = False) -> int:
        """Train the net for ``epochs`` epochs (or exactly ``max_steps`` optimizer steps, epochs
        repeating as needed) on ``loader`` with ``optimizer`` (fresh unless ``keep_optimizer``).

        Validation runs on the calibration split after every epoch; its curve rows go to the
        recorder. Returns the optimizer steps taken (the step axis advances by as many).
        """
        self.module.begin_stage(stage, optimizer, self.steps_done, penalty, keep_optimizer=keep_optimizer)
        if (epochs == 0 and max_steps is None) or max_steps == 0:
            return 0
        started = time.perf_counter()
        trainer = self._make_trainer(epochs, max_steps)
        trainer.fit(self.module, train_dataloaders=loader, val_dataloaders=self.datamodule.val_dataloader())
        steps = trainer.global_step
        self.steps_done += steps
        self.recorder.add_curves(self.module.take_curves())
        samples, calibration_samples = self.module.take_samples()
        if stage == 0:
            self.cost.pretrain_steps += steps
        else:
            self.cost.optimizer_steps += steps
            self.cost.train_samples += samples
            self.cost.eval_samples += calibration_samples  # the calibration curve after every epoch
            self.cost.train_wall_s += time.perf_counter() - started
        return steps

    def train_stages(self, stages: Sequence[Sequence[int]], epochs: int, batch_size: int, optimizer: Callable,
                     steps_per_stage: int | None = None, reset_optimizer: bool = True) -> list[dict[str, float]]:
        """The one stage loop: train on each class group in order, evaluate and record after each.

        Each stage trains ``epochs`` epochs, or exactly ``steps_per_stage`` optimizer steps when
        given. ``reset_optimizer=False`` carries the optimizer and its state (Adam's moments)
        from stage to stage (Avalanche's default) instead of a fresh one per stage. The retention
        strategy sees every stage through its hooks. Stages are numbered from 1 (stage 0 is the
        pretrained baseline). Returns the test metrics after each stage.
        """
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

    def evaluate(self, net: torch.nn.Module | None = None, split: str = "test") -> Evaluation:
        """Evaluate ``net`` (default: the one being trained) on the ``test`` or ``calibration`` split."""
        dm = self.datamodule
        loader = dm.test_dataloader() if split == "test" else dm.calibration_dataloader()
        net = self.net if net is None else net
        evaluation = evaluate(net.to(dm.device), loader, self.module.num_classes)
        if split != "test":  # test evaluations are reporting, not work a method needs
            self.cost.eval_samples += int(evaluation.confusion.sum())
        return evaluation

    def record_stage(self, stage: int, trained: Sequence[int] | str, net: torch.nn.Module | None = None) -> dict[str, float]:
        """Evaluate ``net`` on the test split (and the calibration split, whose ``calibration/...``
        metrics are what every selection reads), record it as ``stage`` and log it; return its
        metrics."""
        evaluation = self.evaluate(net)
        metrics = evaluation.metrics(self.target_classes)
        if len(self.datamodule.calib_y):
            metrics.update(self.evaluate(net, split="calibration").metrics(self.target_classes, prefix="calibration"))
        self.recorder.record_stage(stage, trained, metrics, evaluation)
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if "_class_" not in k or "/acc_class" in k}, step=self.steps_done)
        return metrics

    def adopt_pretraining(self, curves: Sequence[dict], steps: int) -> None:
        """Continue from a cached baseline: its pretraining curve and ``steps`` optimizer steps
        become this run's stage 0, in the result files and in the loggers alike."""
        self.recorder.add_curves(curves)
        self.steps_done = int(steps)
        self.cost.pretrain_steps = int(steps)
        for row in curves:
            for logger in self.loggers:
                logger.log_metrics({f"{row['split']}/{row['metric']}": row["value"]}, step=row["step"])
