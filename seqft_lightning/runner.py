"""What every method works with: data, the module, one way to fit a stage, one way to evaluate.

Methods (``seqft_lightning.methods``) only decide *what* to train on and *what* to record; the
stage mechanics (fresh optimizer per stage, continuous step axis, retention hooks, evaluation
after every stage) live here once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig

from seqft_lightning.data.datamodule import TaskDataModule
from seqft_lightning.models.classifier import ClassifierModule
from seqft_lightning.recorder import RunRecorder

log = logging.getLogger(__name__)


class Runner:
    """Fits stages and evaluates models for one run.

    Args:
        cfg: the composed run config (reads ``trainer`` and ``callbacks``).
        datamodule: the set-up data, already on the training device.
        module: the LightningModule being trained (its ``net`` is the model).
        recorder: where evaluations go.
        loggers: Lightning loggers shared by every stage (one continuous step axis).
        eval_trainer: the Trainer used for ``test`` calls (default: :func:`make_eval_trainer`).
    """

    def __init__(
        self,
        cfg: DictConfig,
        datamodule: TaskDataModule,
        module: ClassifierModule,
        recorder: RunRecorder,
        loggers: list,
        eval_trainer: pl.Trainer | None = None,
    ):
        self.cfg = cfg
        self.datamodule = datamodule
        self.module = module
        self.recorder = recorder
        self.loggers = loggers
        self.eval_trainer = eval_trainer or make_eval_trainer(cfg)
        self.trained_stages: list[list[int]] = []  # class groups trained through train_stages, in order

    # -- trainers ---------------------------------------------------------------------------
    def _callbacks(self) -> list:
        # Fresh callback objects per Trainer: Lightning callbacks keep per-fit state.
        node = self.cfg.get("callbacks") or {}
        callbacks = [instantiate(c) for c in node.values() if c is not None]
        if not self.cfg.trainer.get("enable_progress_bar", True):
            # `trainer.enable_progress_bar=false` alone turns the bar off (Lightning would refuse
            # a progress-bar callback next to it).
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        return callbacks

    def make_trainer(self, max_epochs: int) -> pl.Trainer:
        return instantiate(self.cfg.trainer, max_epochs=max_epochs, logger=self.loggers or False, callbacks=self._callbacks())

    # -- one stage --------------------------------------------------------------------------
    def fit(self, loader: Any, epochs: int, optimizer: Callable, stage: int) -> int:
        """Train ``module`` for ``epochs`` epochs on ``loader`` with a fresh ``optimizer``.

        Validation runs on the calibration split after every epoch. Returns the optimizer steps
        taken; the module's continuous step axis advances by that many.
        """
        self.module.begin_stage(stage, optimizer)
        if epochs == 0:
            return 0
        trainer = self.make_trainer(epochs)
        trainer.fit(self.module, train_dataloaders=loader, val_dataloaders=self.datamodule.val_dataloader())
        steps = trainer.global_step
        self.module.end_stage(steps)
        return steps

    def train_stages(self, stages: Sequence[Sequence[int]], epochs: int, batch_size: int, optimizer: Callable) -> None:
        """The one stage loop: train on each class group in order, evaluate after each.

        The retention strategy (``module.retention``) sees every stage through its hooks.
        Stages are numbered from 1 (0 is the pretrained baseline).
        """
        retention, net, dm = self.module.retention, self.module.net, self.datamodule
        retention.on_finetune_start(net, dm)
        for i, classes in enumerate(stages):
            loader = retention.wrap_train_loader(dm.task_dataloader(classes, batch_size), i, list(classes))
            retention.on_stage_start(net, i, list(classes))
            self.fit(loader, epochs, optimizer, stage=i + 1)
            retention.on_stage_end(net, i, list(classes), dm)
            self.trained_stages.append(list(classes))
            self.record(i + 1, classes)

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, net: torch.nn.Module | None = None, loader: Any = None) -> tuple[dict, torch.Tensor, torch.Tensor]:
        """Test metrics of ``net`` (default: the trained one) on ``loader`` (default: test split).

        Returns ``(flat metrics, confusion matrix, summed loss per true class)``.
        """
        module = self.module if net is None else ClassifierModule(net, target_classes=self.module.target_classes)
        self.eval_trainer.test(module, dataloaders=loader if loader is not None else self.datamodule.test_dataloader(), verbose=False)
        return module.test_results, module.last_confusion, module.last_loss_per_class

    def record(self, stage: int, trained: Sequence[int] | str, net: torch.nn.Module | None = None) -> dict:
        """Evaluate on the test split, record it as ``stage`` and log it to the loggers."""
        metrics, confusion, loss_per_class = self.evaluate(net)
        self.recorder.record_stage(stage, trained, metrics, confusion, loss_per_class)
        for logger in self.loggers:
            logger.log_metrics({k: v for k, v in metrics.items() if "_class_" not in k or k.startswith("test/acc_class")}, step=self.module.step_offset)
        return metrics


def make_eval_trainer(cfg: DictConfig) -> pl.Trainer:
    """A quiet Trainer for ``test`` calls (no logger, callbacks or progress bar)."""
    return instantiate(cfg.trainer, max_epochs=1, logger=False, callbacks=[], enable_progress_bar=False, enable_model_summary=False)
