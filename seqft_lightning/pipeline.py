"""``train(cfg)``: one run of the study, from a composed Hydra config to its result files.

Order of work: validate the config; build the data split; obtain the pretrained baseline (from
the cache when possible); evaluate it (stage 0); run the method; write the result files with
``metrics.json`` last. The training seed is re-applied after the baseline, so a cache hit and a
cache miss produce identical fine-tuning.
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seqft_lightning.baseline import BaselineCache, baseline_key
from seqft_lightning.cl_metrics import continual_summary
from seqft_lightning.config import instantiate_checked, result_hash, stages_of, task_classes, validate_config
from seqft_lightning.io import atomic_write_json
from seqft_lightning.methods import METHODS, get_method
from seqft_lightning.models.classifier import ClassifierModule
from seqft_lightning.recorder import RunRecorder
from seqft_lightning.resume import completed_run
from seqft_lightning.retention import Retention
from seqft_lightning.runner import Runner, make_eval_trainer

log = logging.getLogger(__name__)

# Our loaders are in-memory tensors, and short task stages have fewer batches than the
# logging interval on purpose: these Lightning warnings do not apply.
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


class _TrainerBannerFilter(logging.Filter):
    """Drop what every new Trainer logs (device banner, tips, limit notes, "`Trainer.fit`
    stopped"); keep everything else, e.g. Lightning's "Detected KeyboardInterrupt"."""

    BANNERS = ("GPU available", "TPU available", "HPU available", "Tip:", "was configured so", "LOCAL_RANK:", "`Trainer.fit` stopped")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(banner in message for banner in self.BANNERS)


def _quiet_trainer_banners() -> None:
    """Keep the device banner of later Trainers out of the log (every stage builds one)."""
    banner_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _TrainerBannerFilter) for f in banner_logger.filters):
        banner_logger.addFilter(_TrainerBannerFilter())


def _print_lightning_messages_once() -> None:
    """Lightning attaches its own console handler to the ``lightning`` logger; when the root
    logger already has handlers (Hydra's console and ``train.log``), that handler only prints
    every message a second time, so it is removed."""
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


def _pretrain(cfg: DictConfig, runner: Runner) -> dict[str, Any]:
    """Train the baseline on the pretraining pool (stage 0); returns curve rows and steps."""
    p = cfg.pretrain
    loader = runner.datamodule.pretrain_dataloader(p.batch_size)
    steps = runner.fit(loader, p.epochs, instantiate(p.optimizer), stage=0)
    return {"history": list(runner.module.history), "steps": steps}


def obtain_baseline(cfg: DictConfig, runner: Runner) -> None:
    """Put the pretrained baseline into ``runner.module.net``: from the cache, or by pretraining.

    With pretraining off, the baseline is the (seeded) random initialisation.
    """
    if not (cfg.pretrain.enabled and cfg.pretrain.epochs > 0):
        return
    module = runner.module
    cache = BaselineCache(cfg.paths.cache_dir, enabled=cfg.pretrain.get("cache", True))
    entry = cache.get_or_train(baseline_key(cfg), module.net, lambda: _pretrain(cfg, runner))
    if entry["cached"]:
        module.history, module.step_offset = list(entry["history"]), int(entry["steps"])
        for row in module.history:  # replay the pretraining curve into this run's logs
            for logger in runner.loggers:
                logger.log_metrics({f"{row['split']}/{row['metric']}": row["value"]}, step=row["step"])


def build_retention(cfg: DictConfig) -> Retention:
    """The retention strategy of ``cfg`` (``none`` when the group is absent); bad settings -> ConfigError."""
    if cfg.get("retention") is None:
        return Retention()
    return instantiate_checked(cfg.retention, "retention")


def build_runner(cfg: DictConfig, stages: list[list[int]], retention: Retention) -> Runner:
    """Data (on the training device), model, module, loggers and recorder of one run."""
    targets = task_classes(stages)
    datamodule = instantiate(cfg.data, task_classes=targets)
    datamodule.prepare_data()
    datamodule.setup()
    _print_lightning_messages_once()
    eval_trainer = make_eval_trainer(cfg)
    datamodule.to(eval_trainer.strategy.root_device)
    _quiet_trainer_banners()  # after the first Trainer: its device banner is shown once
    net = instantiate(cfg.model)
    module = ClassifierModule(net, target_classes=targets, log_every_n_steps=cfg.trainer.get("log_every_n_steps", 50))
    module.retention = Retention()  # pretraining is plain; the run's retention starts with fine-tuning
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    return Runner(cfg, datamodule, module, RunRecorder(cfg.paths.output_dir, targets), loggers, eval_trainer)


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Run the experiment ``cfg`` describes; return ``(metrics, objects)``.

    ``metrics`` is the content of ``metrics.json``; ``objects`` holds the datamodule, module and
    runner for callers (tests, notebooks) that want to look further.
    """
    validate_config(cfg, set(METHODS))
    run_dir = Path(cfg.paths.output_dir)
    config_hash = result_hash(cfg)
    done = completed_run(cfg)
    if done is not None:
        return done, {}
    started = time.perf_counter()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    stages = stages_of(cfg)
    retention = build_retention(cfg)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    runner = build_runner(cfg, stages, retention)
    module, recorder = runner.module, runner.recorder
    recorder.start()
    obtain_baseline(cfg, runner)
    # Fine-tuning must not depend on whether the baseline came from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    baseline = runner.record(0, "pretrain")

    module.retention = retention
    extra = get_method(cfg.method.name)(runner, cfg) or {}

    per_stage = recorder.stage_metrics[1:]
    final = extra.pop("final", per_stage[-1] if per_stage else baseline)
    if runner.trained_stages:
        # Continual-learning view: tasks are the stages' class groups (after stage i, on task j).
        final = {**final, **continual_summary(recorder.confusions[1:], runner.trained_stages, stages)}
        recorder.add_task_rows(stages, runner.trained_stages)
    metrics = {
        "method": cfg.method.name,
        "seed": int(cfg.seed),
        "stages": stages,
        "task_classes": task_classes(stages),
        "retention": retention.name,
        "retention_settings": retention.settings(),
        "baseline": baseline,
        "final": final,
        "per_stage": per_stage,
        "config_hash": config_hash,
        **extra,
    }
    recorder.write_curves(module.history)
    recorder.save_checkpoint("final.pt", module.net, model=OmegaConf.to_container(cfg.model, resolve=True), method=cfg.method.name, seed=int(cfg.seed))
    for logger in runner.loggers:
        logger.finalize("success")
    device = runner.eval_trainer.strategy.root_device
    info = {"device": str(device), "torch_threads": torch.get_num_threads(), "wall_time_s": round(time.perf_counter() - started, 3)}
    atomic_write_json(run_dir / "run_info.json", info)
    recorder.finish(metrics)
    return metrics, {"datamodule": runner.datamodule, "module": module, "runner": runner}
