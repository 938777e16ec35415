"""One run of the study, from a checked :class:`~seqft_lightning.run_plan.RunPlan` to its result files:
build the data split, the model and the loggers; obtain the pretrained baseline (from the cache when
possible) and record it as stage 0; run the method; write the result files, ``metrics.json`` last.
The training seed is re-applied after the baseline, so a cache hit and a miss fine-tune alike."""

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
from seqft_lightning.config import instantiate_checked, resolved_result_config
from seqft_lightning.contract import (DIVERGENCE, FINAL_CHECKPOINT, RUN_INFO_FILE, SELECTION_SCORE, TRAINED_PRETRAIN,
                                      flatten)
from seqft_lightning.cost import cost_metrics, flops_per_sample
from seqft_lightning.interrupts import check_interrupted
from seqft_lightning.io import atomic_write_json
from seqft_lightning.loggers import end_run
from seqft_lightning.methods.base import MethodResult
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
    """Remove the console handler Lightning attaches to the ``lightning`` logger when the root logger
    has handlers (Hydra's console and ``train.log``): it would print every message a second time."""
    if logging.getLogger().handlers:
        lightning_logger = logging.getLogger("lightning")
        for handler in [h for h in lightning_logger.handlers if type(h) is logging.StreamHandler]:
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
    datamodule = instantiate_checked(cfg.data, "data", task_classes=plan.task_classes)
    datamodule.prepare_data()
    datamodule.setup()
    _quiet_lightning()
    datamodule.to(device)
    net = instantiate_checked(cfg.model, "model").to(device)
    loggers = [instantiate_checked(c, f"logger.{k}") for k, c in (cfg.get("logger") or {}).items() if c is not None]
    recorder = RunRecorder(plan.run_dir, plan.task_classes)
    return Runner(cfg.trainer, cfg.get("callbacks"), datamodule, net, recorder, loggers, plan.retention, plan.task_classes,
                  divergence_loss=float(cfg.get("divergence_loss") or math.inf))


def obtain_baseline(plan: RunPlan, runner: Runner) -> None:
    """Put the pretrained baseline into the runner's net: from the cache, or by pretraining (with
    pretraining off, the baseline is the seeded random initialisation)."""
    p = plan.cfg.pretrain
    if not (p.enabled and p.epochs > 0):
        return

    def pretrain() -> dict[str, Any]:
        steps = runner.fit(runner.datamodule.pretrain_dataloader(p.batch_size), p.epochs, instantiate(p.optimizer), stage=0)
        return {"history": list(runner.recorder.curves), "steps": steps}

    cache = BaselineCache(plan.cfg.paths.cache_dir, enabled=p.get("cache", True))
    key = baseline_key(plan.cfg, plan.task_classes, runner.datamodule.device, torch.get_num_threads(), plan.code_version)
    entry = cache.get_or_train(key, runner.net, pretrain)
    if entry["cached"]:
        runner.adopt_pretraining(entry["history"], entry["steps"])


def run_cost(runner: Runner, result: MethodResult) -> dict[str, float]:
    """The deterministic ``cost/...`` entries of ``metrics.json``, from what the runner recorded."""
    train_ps, forward_ps = flops_per_sample(runner.net, runner.datamodule.test_x[:64], runner.datamodule.test_y[:64])
    extra_memory = runner.retention.extra_memory_bytes() + result.extra_memory_bytes
    return cost_metrics(runner.work, train_ps, forward_ps, runner.retention.extra_flops(forward_ps, train_ps), extra_memory)


def log_hparams(loggers: list, plan: RunPlan, final: dict[str, float]) -> None:
    """TensorBoard's HParams tab: the run's result-relevant config and its headline metrics."""
    params = flatten(resolved_result_config(plan.cfg))
    params = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in params.items()}
    keys = [k for k in final if k.split("/")[0] in ("calibration", "test", "cl") and "_class_" not in k]
    shown = {f"hp/{k}": final[k] for k in keys if isinstance(final[k], float) and final[k] == final[k]}
    for logger in loggers:
        logger.log_hyperparams(params, metrics=shown)


def run(plan: RunPlan) -> tuple[dict, dict]:
    """Run the checked ``plan``; return ``(metrics, objects)``: the content of ``metrics.json``, and the
    datamodule, net and runner for callers (tests, notebooks) that want to look further."""
    cfg = plan.cfg
    started = time.perf_counter()
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    runner = build_runner(plan, training_device(cfg.trainer))
    recorder = runner.recorder
    recorder.start()
    obtain_baseline(plan, runner)
    # Fine-tuning must not depend on whether the baseline came from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    baseline = runner.record_stage(0, TRAINED_PRETRAIN)

    result = plan.method.run(runner, plan)

    final = dict(result.final)
    if result.selection_score is not None:  # the method's own rule
        final[SELECTION_SCORE] = float(result.selection_score)
    elif "calibration/acc" in final:  # the selection rule as one number (what a sweeper maximises)
        candidate = {k: final[f"calibration/{k}"] for k in ("acc", "acc_target", "acc_retained")}
        rule, retained = cfg.selection, baseline["calibration/acc_retained"]
        final[SELECTION_SCORE] = score(candidate, retained, rule.rule, float(rule.delta))
    if runner.trained_stages:
        # Continual-learning view: tasks are the stages' class groups (after stage i, on task j).
        confusions = [r.evaluation.confusion for r in recorder.stages[1:]]
        final = {**final, **continual_summary(confusions, runner.trained_stages, plan.stages)}
        recorder.add_task_rows(plan.stages, runner.trained_stages)
    metrics = {  # written with sorted keys
        "method": plan.method_name, "seed": int(cfg.seed), "stages": plan.stages, "task_classes": plan.task_classes,
        "retention": plan.retention.name, "retention_settings": plan.retention.settings(),
        "retention_inactive": plan.retention_inactive, "baseline": baseline, "final": final,
        "per_stage": [r.metrics for r in recorder.stages[1:]], "config_hash": plan.config_hash,
        "code_version": plan.code_version, DIVERGENCE: runner.divergence, "cost": run_cost(runner, result), **result.fields,
    }
    check_interrupted()  # a Ctrl-C swallowed by a finalizer still leaves no complete-looking results
    final_net = result.net if result.net is not None else runner.net
    recorder.save_net(FINAL_CHECKPOINT, final_net, model=OmegaConf.to_container(cfg.model, resolve=True), method=plan.method_name, seed=int(cfg.seed))
    log_hparams(runner.loggers, plan, final)
    end_run(runner.loggers)
    device = str(runner.datamodule.device)
    atomic_write_json(plan.run_dir / RUN_INFO_FILE, {  # not deterministic: kept out of metrics.json
        "device": device, "torch_threads": torch.get_num_threads(), "wall_time_s": round(time.perf_counter() - started, 3),
        "cpu_kernels": cfg.get("cpu_kernels"), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "code_version": plan.code_version, "cost/device": device, "cost/train_wall_s": round(runner.work.train_wall_s, 3),
    })
    recorder.finish(metrics)
    return metrics, {"datamodule": runner.datamodule, "net": runner.net, "runner": runner}

