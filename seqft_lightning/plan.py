"""From a composed config to a :class:`RunPlan`: every check before any work, done once.

``plan_run(cfg)`` refuses a bad config with one :class:`~seqft_lightning.errors.ConfigError` line
naming the user's key, before any image is read or model trained (a model is built, never trained).
The cheap checks come first and import no torch, so most refusals take under a second. What it
resolves (stages, task classes, retention strategy) is what the run uses: nothing is recomputed."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from seqft_lightning.config import (check_finite, instantiate_checked, resolved_result_config, show_value, stable_hash,
                                    task_classes, validate_config, validate_stages)
from seqft_lightning.errors import ConfigError
from seqft_lightning.methods import METHODS
from seqft_lightning.provenance import code_version, pin_cpu_kernels
from seqft_lightning.run_plan import RunPlan
from seqft_lightning.values import is_number

log = logging.getLogger(__name__)


# Ranges that every torch.optim optimizer with such an argument enforces (torch raises ValueError),
# checked from the config alone: the usual slip (a negative learning rate) costs no torch import.
_NON_NEGATIVE_ARGS = ("lr", "eps", "weight_decay", "momentum")


def check_optimizer_ranges(node: DictConfig, key: str) -> None:
    """The shared ranges (:data:`_NON_NEGATIVE_ARGS`, ``betas``), from the config alone."""
    for name in _NON_NEGATIVE_ARGS:
        if is_number(value := node.get(name)) and value < 0:
            raise ConfigError(f"{key}.{name}={value!r} is refused by {node.get('_target_')}: it must be >= 0; fix that argument")
    betas = node.get("betas")
    if betas is not None and all(is_number(b) for b in betas) and not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"{key}.betas={show_value(betas)} is refused by {node.get('_target_')}: each must be in [0, 1); fix that argument")


def check_optimizer(node: DictConfig, key: str) -> None:
    """Build the optimizer ``node`` on a real one-parameter list: torch checks every argument (a run
    that trains imports the same modules anyway, Lightning among them)."""
    import torch

    factory = instantiate_checked(node, key)
    try:
        factory(params=[torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError, RuntimeError) as err:
        args = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if not k.startswith("_")}
        raise ConfigError(f"{key}={show_value(OmegaConf.create(args))} is refused by {node.get('_target_')}: "
                          f"{str(err).splitlines()[0]}; fix that argument") from None


def check_accelerator(trainer: DictConfig) -> None:
    """An explicitly requested GPU must exist (``accelerator=auto`` falls back to the CPU)."""
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator not in ("gpu", "cuda", "mps"):
        return
    import torch

    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(f"trainer.accelerator={accelerator}: no CUDA GPU is available on this machine; use trainer=cpu "
                          "or trainer.accelerator=auto")
    if accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("trainer.accelerator=mps: MPS is not available on this machine; use trainer=cpu or trainer.accelerator=auto")
    devices = trainer.get("devices", 1)
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > torch.cuda.device_count():
        raise ConfigError(f"trainer.devices={devices}: this machine has {torch.cuda.device_count()} CUDA GPU(s); lower trainer.devices")


def check_paths(paths: DictConfig) -> None:
    """Every ``paths.*_dir`` (data, logs, baselines, this run) is a folder, or can become one."""
    for key, folder in paths.items():
        if str(key).endswith("_dir") and Path(str(folder)).exists() and not Path(str(folder)).is_dir():
            raise ConfigError(f"paths.{key}={folder} is a file, not a folder; point paths.{key} at a folder")


def check_data(data: DictConfig, targets: list[int]) -> None:
    """MNIST-format files (vendored MNIST, a Fashion-MNIST folder): the files are intact (their
    MD5s) and the split can be carved (class counts from the label file), refused here rather
    than after Lightning's import. Other data modules check their split when they set up."""
    from seqft_lightning.data.mnist_files import DATAMODULES, ensure_raw, train_label_counts
    from seqft_lightning.data.splits import check_split_sizes

    dataset, files_key = DATAMODULES.get(str(data.get("_target_", "")).rpartition(".")[2], (None, None))
    if dataset is None:
        return
    raw = ensure_raw(dataset, data[files_key], data.data_dir)
    check_split_sizes(train_label_counts(raw), targets, data.samples_per_task, int(data.calibration_size),
                      int(data.get("estimation_size", 0)))


def check_model(model: DictConfig, retention: Any) -> None:
    """Settings that depend on the model, checked on the configured model itself (built, not
    trained): its own arguments, that it takes the data's images, and the retention strategy's
    layer selection (``retention.trainable`` of ``freeze``)."""
    import torch

    net = instantiate_checked(model, "model")
    name = str(model.get("_target_", "")).rpartition(".")[2]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 28 * 28))  # every data module serves flattened rows of 28x28 pixels
    except RuntimeError as err:
        raise ConfigError(f"model ({name}) does not take the data's 28x28 images ({str(err).splitlines()[0]}); "
                          "fix model.input_dim (784) or model.image_size (28)") from None
    from seqft_lightning.models.stacked import unstackable_layers

    if layers := unstackable_layers(net):
        raise ConfigError(f"model ({name}) has layers that stacked training cannot run ({', '.join(layers)}): every run trains "
                          "under torch.vmap (README, Stacked training); use a model without dropout or batch norm")
    try:
        retention.check_model(net)
    except ValueError as err:
        raise ConfigError(f"retention={retention.name} does not fit model ({name}): {err}") from None


def plan_run(cfg: DictConfig) -> RunPlan:
    """Validate ``cfg`` completely and resolve it into a :class:`RunPlan` (no data, no training)."""
    validate_config(cfg, set(METHODS))
    result_cfg = resolved_result_config(cfg)  # what config.json holds and the config hash covers
    check_finite(result_cfg)
    pin_cpu_kernels(cfg.get("cpu_kernels"))  # before anything below may import torch
    method = METHODS[cfg.method.name]
    method.validate(cfg)  # before the generic stage check: e.g. negation's stages derive from `forget`
    stages = validate_stages(cfg.method.stages, int(cfg.model.num_classes))
    targets = task_classes(stages)
    check_accelerator(cfg.trainer)
    check_paths(cfg.paths)
    check_data(cfg.data, targets)
    optimizers = {"method.optimizer": cfg.method.optimizer}
    if cfg.pretrain.enabled and cfg.pretrain.epochs > 0:
        optimizers["pretrain.optimizer"] = cfg.pretrain.optimizer
    for key, node in optimizers.items():
        check_optimizer_ranges(node, key)
    for key, node in optimizers.items():
        check_optimizer(node, key)
    train_groups = method.train_groups(stages)
    from seqft_lightning.retention import Retention  # torch: loaded by the optimizer check already

    retention = instantiate_checked(cfg.retention, "retention") if cfg.get("retention") is not None else Retention()
    check_model(cfg.model, retention)
    # The pretraining pool is empty when every class is a task class and takes all its samples.
    has_pool = not (cfg.data.samples_per_task is None and len(targets) == int(cfg.model.num_classes))
    inactive = retention.inactive_reason(has_pool=has_pool, num_stages=len(train_groups))
    if inactive is not None:
        log.warning("retention=%s cannot act in this run (%s): it equals retention=none; metrics.json marks it", retention.name, inactive)
    return RunPlan(cfg=cfg, method_name=str(cfg.method.name), method=method, stages=stages, task_classes=targets,
                   train_groups=train_groups, retention=retention, retention_inactive=inactive,
                   config_hash=stable_hash(result_cfg), run_dir=Path(cfg.paths.output_dir),
                   code_version=code_version())
