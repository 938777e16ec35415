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
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from seqft_lightning.baseline import BaselineCache, baseline_key
from seqft_lightning.cl_metrics import continual_summary
from seqft_lightning.config import result_hash, stages_of, task_classes, validate_config
from seqft_lightning.io import atomic_write_json
from seqft_lightning.methods import METHODS
from seqft_lightning.models.classifier import ClassifierModule
from seqft_lightning.recorder import METRICS_FILE, RunRecorder
from seqft_lightning.retention import Retention
from seqft_lightning.runner import Runner, make_eval_trainer

log = logging.getLogger(__name__)

# Our loaders are in-memory tensors, and short task stages have fewer batches than the
# logging interval on purpose: these Lightning warnings do not apply.
warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")


def completed_metrics(run_dir: Path, config_hash: str) -> dict | None:
    """The metrics of a finished run in ``run_dir`` with the same config, else ``None``."""
    import json

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return metrics if metrics.get("config_hash") == config_hash else None


def _pretrain(cfg: DictConfig, runner: Runner) -> dict[str, Any]:
    """Train the baseline on the pretraining pool (stage 0); returns curve rows and steps."""
    p = cfg.pretrain
    loader = runner.datamodule.pretrain_dataloader(p.batch_size)
    steps = runner.fit(loader, p.epochs, instantiate(p.optimizer), stage=0)
    return {"history": list(runner.module.history), "steps": steps}


def train(cfg: DictConfig) -> tuple[dict, dict]:
    """Run the experiment ``cfg`` describes; return ``(metrics, objects)``.

    ``metrics`` is the content of ``metrics.json``; ``objects`` holds the datamodule, module and
    runner for callers (tests, notebooks) that want to look further.
    """
    validate_config(cfg, set(METHODS))
    run_dir = Path(cfg.paths.output_dir)
    config_hash = result_hash(cfg)
    if cfg.get("resume"):
        done = completed_metrics(run_dir, config_hash)
        if done is not None:
            log.info("resume: %s is complete with the same config; skipping", run_dir)
            return done, {}
    started = time.perf_counter()
    stages = stages_of(cfg)
    targets = task_classes(stages)

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, task_classes=targets)
    datamodule.prepare_data()
    datamodule.setup()
    eval_trainer = make_eval_trainer(cfg)
    device = eval_trainer.strategy.root_device
    datamodule.to(device)
    # One "GPU available" banner per run is enough; every stage builds a Trainer.
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)

    net = instantiate(cfg.model)
    module = ClassifierModule(net, target_classes=targets, log_every_n_steps=cfg.trainer.get("log_every_n_steps", 50))
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c is not None]
    recorder = RunRecorder(run_dir, targets)
    runner = Runner(cfg, datamodule, module, recorder, loggers)
    runner._eval_trainer = eval_trainer

    if cfg.pretrain.enabled and cfg.pretrain.epochs > 0:
        cache = BaselineCache(cfg.paths.cache_dir, enabled=cfg.pretrain.get("cache", True))
        entry = cache.get_or_train(baseline_key(cfg), net, lambda: _pretrain(cfg, runner))
        if entry["cached"]:
            module.history, module.step_offset = list(entry["history"]), int(entry["steps"])
            for row in module.history:  # replay the pretraining curve into this run's logs
                for logger in loggers:
                    logger.log_metrics({f"{row['split']}/{row['metric']}": row["value"]}, step=row["step"])
    # Fine-tuning must not depend on whether the baseline came from the cache.
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    baseline = runner.record(0, "pretrain")

    retention = instantiate(cfg.retention) if cfg.get("retention") is not None else Retention()
    module.retention = retention
    extra = METHODS[cfg.method.name](runner, cfg) or {}

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
        "task_classes": targets,
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
    for logger in loggers:
        logger.finalize("success")
    atomic_write_json(run_dir / "run_info.json", {"device": str(device), "wall_time_s": round(time.perf_counter() - started, 3)})
    recorder.finish(metrics)
    return metrics, {"datamodule": datamodule, "module": module, "runner": runner}
