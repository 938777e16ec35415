"""One run of the study, from a checked :class:`~seqft_lightning.plan.RunPlan` to its result files.

Order of work: build the data split, the model and the loggers; obtain the pretrained baseline
(from the cache when possible) and record it as stage 0; run the method; write the result files,
``metrics.json`` last. The training seed is re-applied after the baseline, so a cache hit and a
cache miss produce identical fine-tuning. The config was checked before (see
:func:`seqft_lightning.api.train`); nothing here checks it again.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seqft_lightning.baseline import BaselineCache, baseline_key
from seqft_lightning.cl_metrics import continual_summary
from seqft_lightning.contract import DIVERGENCE, FINAL_CHECKPOINT, TRAINED_PRETRAIN, flatten, result_config
from seqft_lightning.cost import cost_metrics, flops_per_sample
from seqft_lightning.loggers import end_run
from seqft_lightning.methods.base import MethodResult
from seqft_lightning.models.classifier import ClassifierModule
from seqft_lightning.run_plan import RunPlan
from seqft_lightning.recorder import RunRecorder
from seqft_lightning.selection import score
from seqft_lightning.runner import Runner

log = logging.getLogger(__name__)

# Our loaders are in-memory tensors, and short task stages have fewer batches than the
# logging interval on purpose: these Lightning warnings do not apply.
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


def _quiet_lightning() -> None:
    """Lightning attaches its own console handler to the ``lightning`` logger; when the root
    logger already has handlers (Hydra's console and ``train.log``), it only prints every message
    a second time, so it is removed. (Every Trainer's device banner is an INFO record of
    ``lightning.pytorch.utilities.rank_zero``, whose level ``conf/hydra/default.yaml`` sets.)"""
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


def training_device(trainer: DictConfig) -> torch.device:
    """The device Lightning trains on for ``trainer`` (``accelerator=auto``: CUDA, MPS, then CPU)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if accelerator in ("gpu", "cuda"):
        devices, rank = trainer.get("devices", 1), int(os.environ.get("LOCAL_RANK", "0"))
        index = list(devices)[rank] if OmegaConf.is_list(devices) else rank
        return torch.device("cuda", int(index))
    return torch.device("mps" if accelerator == "mps" else "cpu")


def build_runner(plan: RunPlan, device: torch.device) -> Runner:
    """Data (on ``device``, the training device), model, module, loggers and recorder of one run."""
    cfg = plan.cfg
    datamodule = instantiate(cfg.data, task_classes=plan.task_classes)
    datamodule.prepare_data()
    datamodule.setup()
    _quiet_lightning()
    datamodule.to(device)
    module = ClassifierModule(instantiate(cfg.model), log_every_n_steps=cfg.trainer.get("log_every_n_steps", 50))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    recorder = RunRecorder(plan.run_dir, plan.task_classes)
    return Runner(cfg.trainer, cfg.get("callbacks"), datamodule, module, recorder, loggers, plan.retention, plan.task_classes,
                  divergence_loss=float(cfg.get("divergence_loss") or math.inf))


def obtain_baseline(plan: RunPlan, runner: Runner) -> None:
    """Put the pretrained baseline into the runner's net: from the cache, or by pretraining.

    With pretraining off, the baseline is the (seeded) random initialisation.
    """
    p = plan.cfg.pretrain
    if not (p.enabled and p.epochs > 0):
        return

    def pretrain() -> dict[str, Any]:
        steps = runner.fit(runner.datamodule.pretrain_dataloader(p.batch_size), p.epochs, instantiate(p.optimizer), stage=0)
        return {"history": runner.recorder.curves(), "steps": steps}

    cache = BaselineCache(plan.cfg.paths.cache_dir, enabled=p.get("cache", True))
    key = baseline_key(plan.cfg, plan.task_classes, runner.datamodule.device, torch.get_num_threads(), plan.code_version)
    entry = cache.get_or_train(key, runner.net, pretrain)
    if entry["cached"]:
        runner.adopt_pretraining(entry["history"], entry["steps"])


def selection_score(plan: RunPlan, baseline: dict[str, float], final: dict[str, float]) -> dict[str, float]:
    """``calibration/selection_score``: the selection rule as one number (what a sweeper maximises)."""
    if "calibration/acc" not in final:
        return {}
    rule = plan.cfg.selection
    candidate = {k: final[f"calibration/{k}"] for k in ("acc", "acc_target", "acc_retained")}
    value = score(candidate, baseline["calibration/acc_retained"], rule.rule, float(rule.delta))
    return {"calibration/selection_score": value}


def run_cost(runner: Runner, result: MethodResult) -> dict[str, float]:
    """The deterministic ``cost/...`` entries of ``metrics.json`` (:func:`seqft_lightning.cost.cost_metrics`
    of what the runner recorded; nothing is accumulated here, so calling it twice gives the same)."""
    dm = runner.datamodule
    probe = slice(0, 64)
    train_ps, forward_ps = flops_per_sample(runner.net, dm.test_x[probe], dm.test_y[probe])
    extra_memory = runner.retention.extra_memory_bytes() + result.extra_memory_bytes
    return cost_metrics(runner.work, train_ps, forward_ps, runner.retention.extra_flops(forward_ps, train_ps), extra_memory)


def log_hparams(loggers: list, plan: RunPlan, final: dict[str, float]) -> None:
    """TensorBoard's HParams tab: the run's result-relevant config and its headline metrics."""
    params = flatten(result_config(OmegaConf.to_container(plan.cfg, resolve=True)))
    params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    keys = [k for k in final if k.split("/")[0] in ("calibration", "test", "cl") and "_class_" not in k]
    shown = {f"hp/{k}": final[k] for k in keys if isinstance(final[k], float) and final[k] == final[k]}
    for logger in loggers:
        logger.log_hyperparams(params, metrics=shown)


def run(plan: RunPlan) -> tuple[dict, dict]:
    """Run the checked ``plan``; return ``(metrics, objects)``.

    ``metrics`` is the content of ``metrics.json``; ``objects`` holds the datamodule, module and
    runner for callers (tests, notebooks) that want to look further.
    """
    cfg = plan.cfg
    started = time.perf_counter()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    device = training_device(cfg.trainer)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    runner = build_runner(plan, device)
    recorder = runner.recorder
    recorder.start()
    obtain_baseline(plan, runner)
    # Fine-tuning must not depend on whether the baseline came from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    baseline = runner.record_stage(0, TRAINED_PRETRAIN)

    result = plan.method.run(runner, plan)

    final = {**result.final, **selection_score(plan, baseline, result.final)}
    if runner.trained_stages:
        # Continual-learning view: tasks are the stages' class groups (after stage i, on task j).
        confusions = [r.evaluation.confusion for r in recorder.stages()[1:]]
        final = {**final, **continual_summary(confusions, runner.trained_stages, plan.stages)}
        recorder.add_task_rows(plan.stages, runner.trained_stages)
    metrics = {
        "method": plan.method_name,
        "seed": int(cfg.seed),
        "stages": plan.stages,
        "task_classes": plan.task_classes,
        "retention": plan.retention.name,
        "retention_settings": plan.retention.settings(),
        "retention_inactive": plan.retention_inactive,
        "baseline": baseline,
        "final": final,
        "per_stage": [r.metrics for r in recorder.stages()[1:]],
        "config_hash": plan.config_hash,
        "code_version": plan.code_version,
        DIVERGENCE: runner.divergence,
        "cost": run_cost(runner, result),
        **result.fields,
    }
    final_net = result.net if result.net is not None else runner.net
    recorder.save_net(FINAL_CHECKPOINT, final_net, model=OmegaConf.to_container(cfg.model, resolve=True), method=plan.method_name, seed=int(cfg.seed))
    log_hparams(runner.loggers, plan, final)
    end_run(runner.loggers)
    device = runner.datamodule.device
    recorder.write_run_info({
        "device": str(device), "torch_threads": torch.get_num_threads(), "wall_time_s": round(time.perf_counter() - started, 3),
        "cpu_kernels": cfg.get("cpu_kernels"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "code_version": plan.code_version,
        "cost/device": str(device), "cost/train_wall_s": round(runner.work.train_wall_s, 3),
    })
    recorder.finish(metrics)
    return metrics, {"datamodule": runner.datamodule, "module": runner.module, "runner": runner}
