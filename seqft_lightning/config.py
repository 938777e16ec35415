"""Structured-config schemas and the checks that turn a bad config into one clear line.

Types are checked by merging each section into its dataclass schema (OmegaConf does the type
conversion and rejects what cannot convert); ranges and cross-field rules are checked below.
Every failure raises :class:`~seqft_lightning.errors.ConfigError` naming the key and the fix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqft_lightning.contract import result_config
from seqft_lightning.errors import ConfigError
from seqft_lightning.selection import check_rule


@dataclass
class DataSchema:
    samples_per_task: Optional[int] = 1000
    calibration_size: int = 5000
    estimation_size: int = 0
    split_seed: int = 0
    eval_batch_size: int = 1000


@dataclass
class ModelSchema:
    input_dim: int = 784
    hidden_dims: list[int] = field(default_factory=lambda: [128, 64])
    num_classes: int = 10


@dataclass
class PretrainSchema:
    enabled: bool = True
    epochs: int = 5
    batch_size: int = 64


@dataclass
class MethodSchema:
    name: str = "sequential"
    stages: list[list[int]] = field(default_factory=lambda: [[3], [4], [7]])
    epochs_per_stage: int = 10
    steps_per_stage: Optional[int] = None
    reset_optimizer: bool = True
    batch_size: int = 64


@dataclass
class RootSchema:
    seed: int = 0
    resume: bool = False
    optimized_metric: str = "calibration/selection_score"
    torch_threads: Optional[int] = None
    cpu_kernels: str = "avx2"
    divergence_loss: float = 25.0


SECTION_SCHEMAS = {"data": DataSchema, "model": ModelSchema, "pretrain": PretrainSchema, "method": MethodSchema, None: RootSchema}


def show_value(value: Any) -> str:
    """A config value as the user would type it, on one line."""
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value))
    return repr(value)


def _check_types(cfg: DictConfig) -> None:
    """Merge each known key into its schema; OmegaConf refuses values that cannot convert."""
    for section, schema in SECTION_SCHEMAS.items():
        node = cfg if section is None else cfg.get(section)
        if node is None:
            raise ConfigError(f"config group '{section}' is missing; select one, e.g. `{section}=<option>`")
        for f in fields(schema):
            if f.name not in node:
                continue
            value = node[f.name]
            try:
                OmegaConf.merge(OmegaConf.structured(schema), {f.name: value})
            except OmegaConfBaseException as err:
                key = f.name if section is None else f"{section}.{f.name}"
                reason = str(err).splitlines()[0]
                raise ConfigError(f"{key}={show_value(value)} has the wrong type ({reason}); expected {f.type}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_stages(stages: Any, num_classes: int, key: str = "method.stages") -> list[list[int]]:
    """Check ``stages`` is a non-empty list of non-empty, disjoint class lists in ``[0, num_classes)``."""
    _require(isinstance(stages, (list, ListConfig)) and len(stages) > 0, f"{key} must be a non-empty list of class lists, e.g. [[3],[4],[7]]")
    seen: dict[int, int] = {}
    out = []
    for i, stage in enumerate(stages):
        _require(isinstance(stage, (list, ListConfig)) and len(stage) > 0, f"{key}[{i}] is empty; every stage needs at least one class, e.g. [[3],[4],[7]]")
        for c in stage:
            _require(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes, f"{key}[{i}] has class {c!r}; classes must be integers in 0..{num_classes - 1}")
            _require(c not in seen, f"{key}: class {c} appears in stage {seen.get(c)} and stage {i}; each class may be trained in one stage only")
            seen[c] = i
        out.append([int(c) for c in stage])
    return out


def validate_config(cfg: DictConfig, known_methods: set[str]) -> None:
    """Types and ranges of the keys every run has; raise :class:`ConfigError` on the first invalid
    value (one line, names the key). Method-specific settings are each method's ``validate``."""
    _check_types(cfg)
    _require(cfg.seed >= 0, f"seed={cfg.seed} must be >= 0")
    threads = cfg.get("torch_threads")
    _require(threads is None or threads >= 1, f"torch_threads={threads} must be >= 1, or null for torch's default")
    _require(str(cfg.get("cpu_kernels", "avx2")) in ("avx2", "native"), f"cpu_kernels={cfg.get('cpu_kernels')} is unknown; choose avx2 or native")
    divergence = cfg.get("divergence_loss", 25.0)
    _require(divergence > 0, f"divergence_loss={divergence} must be > 0 (nats per sample; chance is ln 10 = 2.3)")
    method = cfg.method
    _require(method.name in known_methods, f"method.name={method.name!r} is unknown; choose one of {sorted(known_methods)} (e.g. `method=sequential`)")
    num_classes = int(cfg.model.num_classes)
    _require(num_classes >= 2, f"model.num_classes={num_classes} must be >= 2")
    for key, value, minimum in [
        ("method.epochs_per_stage", method.epochs_per_stage, 0),
        ("method.batch_size", method.batch_size, 1),
        ("pretrain.epochs", cfg.pretrain.epochs, 0),
        ("pretrain.batch_size", cfg.pretrain.batch_size, 1),
        ("data.calibration_size", cfg.data.calibration_size, 0),
        ("data.estimation_size", cfg.data.get("estimation_size", 0), 0),
        ("data.eval_batch_size", cfg.data.get("eval_batch_size", 1), 1),
    ]:
        _require(value >= minimum, f"{key}={value} must be >= {minimum}")
    steps = method.get("steps_per_stage")
    _require(steps is None or steps >= 1, f"method.steps_per_stage={steps} must be >= 1, or null to train method.epochs_per_stage epochs")
    metric = str(cfg.get("optimized_metric", "calibration/selection_score"))
    _require(metric.startswith("calibration/"), f"optimized_metric={metric} is not a calibration metric: a sweeper would select on it; use calibration/... (e.g. calibration/selection_score)")
    _require(cfg.get("selection") is not None, "selection is missing; conf/train.yaml sets it (selection.rule, selection.delta)")
    try:
        check_rule(cfg.selection.get("rule"), cfg.selection.get("delta"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    spt = cfg.data.samples_per_task
    _require(spt is None or spt >= 1, f"data.samples_per_task={spt} must be >= 1, or null for every available sample")
    _require(all(int(h) >= 1 for h in cfg.model.hidden_dims), f"model.hidden_dims={list(cfg.model.hidden_dims)} must hold positive sizes")


def instantiate_checked(node: DictConfig, key: str) -> Any:
    """``hydra.utils.instantiate(node)``; an invalid argument becomes a one-line ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node)
    except (InstantiationException, ValueError, TypeError) as err:
        cause = err.__cause__ or err
        raise ConfigError(f"{key}: {str(cause).splitlines()[0]}") from err


def task_classes(stages: list[list[int]]) -> list[int]:
    """Classes held out for fine-tuning: the union of the stages, sorted."""
    return sorted({int(c) for stage in stages for c in stage})


def stable_hash(obj: Any) -> str:
    """SHA-256 (first 16 hex digits) of ``obj`` as canonical JSON (containers resolved first)."""
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def result_hash(cfg: DictConfig) -> str:
    """Hash of everything that determines a run's results (:func:`seqft_lightning.contract.affects_results`)."""
    return stable_hash(result_config(OmegaConf.to_container(cfg, resolve=True)))
