"""What every method works with: the data, one way to fit a stage, one way to evaluate and record.
Methods decide *what* to train on and record; the stage mechanics (a fresh optimizer per stage, the
continuous step axis, the retention hooks, the evaluation after every stage) live here once."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import ProgressBar
from omegaconf import DictConfig, OmegaConf

from seqft_lightning.config import instantiate_checked
from seqft_lightning.cost import Work
from seqft_lightning.data.datamodule import TaskDataModule
from seqft_lightning.evaluation import Evaluation, evaluate
from seqft_lightning.data.loaders import StackedLoader
from seqft_lightning.lockstep import TrainRequest, train_in_turn
from seqft_lightning.models.classifier import ClassifierModule, Penalty
from seqft_lightning.models.stacked import architecture_key
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
    net: torch.nn.Module
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
    #: the optimizer state after the last fit, per parameter index (a stage that keeps the optimizer continues it)
    optimizer_state: dict | None = None

    def _make_trainer(self, max_epochs: int, max_steps: int | None) -> pl.Trainer:
        # Fresh callback objects per Trainer (Lightning callbacks keep per-fit state).
        callbacks = [instantiate_checked(c, f"callbacks.{k}") for k, c in (self.callbacks_cfg or {}).items() if c is not None]
        if not self.trainer_cfg.get("enable_progress_bar", True):  # Lightning refuses a bar callback then
            callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
        # No progress-bar callback (e.g. `callbacks=none`) means no bar, not Lightning's default one.
        bar = any(isinstance(c, ProgressBar) for c in callbacks)
        limits = {"max_epochs": max_epochs} if max_steps is None else {"max_epochs": -1, "max_steps": int(max_steps)}
        # No logger: the module writes each stacked model's scalars to that model's own loggers.
        # A setting Lightning refuses (devices=0, precision=bogus, ...) is the user's: one line, exit 2.
        return instantiate_checked(self.trainer_cfg, "trainer", **limits, logger=False, callbacks=callbacks,
                                   enable_progress_bar=bar)

    def fit(self, loader: Any, epochs: int, optimizer: Callable, stage: int, penalty: Penalty | None = None,
            max_steps: int | None = None, keep_optimizer: bool = False) -> int:
        """Train the net for ``epochs`` epochs (or exactly ``max_steps`` optimizer steps) on ``loader``
        with ``optimizer`` (fresh unless ``keep_optimizer``), validating on the calibration split after
        every epoch; return the optimizer steps taken (the step axis advances by as many). Inside a
        :class:`~seqft_lightning.lockstep.Lockstep`, the fit is stacked with the other jobs' equal ones
        (:func:`fit_key`); the numbers are the same as alone."""
        if (epochs == 0 and max_steps is None) or max_steps == 0:
            return 0
        request = FitRequest(self, loader, int(epochs), optimizer, int(stage), penalty, max_steps,
                             bool(keep_optimizer) and self.optimizer_state is not None)
        result: FitResult = train_in_turn(TrainRequest(fit_key(request), request), train_stack)
        self.steps_done += result.steps
        self.optimizer_state = result.optimizer_state
        self._add_curves(result.curves)
        if stage == 0:
            self.work.pretrain_steps += result.steps
        else:
            self.work.optimizer_steps += result.steps
            self.work.train_samples += result.samples
            self.work.calibration_samples += result.calibration_samples  # the validation pass after every epoch (global)
            self.work.train_wall_s += result.wall_s
        return result.steps

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
        evaluation = evaluate(net.to(dm.device), loaders[split](), int(self.net.num_classes))
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


@dataclass(eq=False)
class FitRequest:
    """One :meth:`Runner.fit` call, as a training request (see :func:`fit_key`, :func:`train_stack`)."""

    runner: Runner
    loader: Any
    epochs: int
    optimizer: Callable
    stage: int
    penalty: Penalty | None
    max_steps: int | None
    keep_optimizer: bool


@dataclass(frozen=True)
class FitResult:
    """What one model's fit did: optimizer ``steps``, its ``curves.csv`` rows, training ``samples``
    (over all DDP ranks), ``calibration_samples`` evaluated, its ``optimizer_state`` after the fit and
    ``wall_s``, its share (seconds) of the stack's wall time."""

    steps: int
    curves: list[dict]
    samples: int
    calibration_samples: int
    optimizer_state: dict
    wall_s: float


def _batch_key(loader: Any) -> Hashable | None:
    if isinstance(loader, list) and not loader:
        return "none"
    key = getattr(loader, "batch_key", None)
    return None if key is None else key()


def fit_key(request: FitRequest) -> Hashable:
    """Fits with equal keys train as one stack and give each model the numbers it gets alone: the same
    stage, length, optimizer, trainer and callbacks, device, architecture and batch shapes. A fit that
    cannot be stacked exactly gets a key of its own: CPU with more than one thread (how a sum is split
    follows the work), gradient clipping (Lightning's norm would span every model)."""
    runner = request.runner
    device = runner.datamodule.device
    loaders = (_batch_key(request.loader), _batch_key(runner.datamodule.val_dataloader()))
    threads = torch.get_num_threads()
    if None in loaders or (device.type == "cpu" and threads != 1) or runner.trainer_cfg.get("gradient_clip_val"):
        return ("alone", id(request))
    configs = OmegaConf.to_yaml(runner.trainer_cfg) + OmegaConf.to_yaml(runner.callbacks_cfg or {})
    return (request.stage, request.epochs, request.max_steps, request.keep_optimizer, repr(request.optimizer),
            configs, str(device), threads, architecture_key(runner.net), loaders)


def train_stack(requests: Sequence[TrainRequest]) -> list[FitResult]:
    """Train the fits of ``requests`` (equal :func:`fit_key`) as one stack; one :class:`FitResult` each."""
    fits: list[FitRequest] = [r.payload for r in requests]
    first = fits[0].runner
    module = ClassifierModule([f.runner.net for f in fits], log_every_n_steps=first.trainer_cfg.get("log_every_n_steps", 50))
    states = [f.runner.optimizer_state for f in fits] if fits[0].keep_optimizer else None
    module.begin_stage(fits[0].stage, fits[0].optimizer, [f.runner.steps_done for f in fits], [f.penalty for f in fits],
                       optimizer_states=states, loggers=[f.runner.loggers for f in fits])
    train = StackedLoader([f.loader for f in fits], [r.random for r in requests])
    vals = [f.runner.datamodule.val_dataloader() for f in fits]
    val = StackedLoader(vals) if not isinstance(vals[0], list) else []
    started = time.perf_counter()
    trainer = first._make_trainer(fits[0].epochs, fits[0].max_steps)
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    wall_s = (time.perf_counter() - started) / len(fits)
    curves, samples, optimizer_states = module.take_curves(), module.take_samples(), module.optimizer_states()
    device = first.datamodule.device
    # each rank saw its shard: count them all (one device: the count itself)
    trained = [int(trainer.strategy.reduce(torch.tensor(n, device=device), reduce_op="sum")) for n, _ in samples]
    return [FitResult(trainer.global_step, curves[k], trained[k], samples[k][1], optimizer_states[k], wall_s) for k in range(len(fits))]
