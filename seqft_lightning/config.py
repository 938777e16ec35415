"""Structured-config schemas and the checks that turn a bad config into one clear line: types by
merging each section into its dataclass schema (OmegaConf converts or refuses), then ranges and
cross-field rules; every failure is a :class:`~seqft_lightning.errors.ConfigError` naming the key."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import make_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from seqft_lightning.contract import SELECTION_PART, SELECTION_SCORE, flatten, result_config, split_metric_keys
from seqft_lightning.errors import ConfigError
from seqft_lightning.selection import check_rule


#: The type of every key every run has, per section (``None``: the root, first: other keys interpolate its
#: ``seed``), as OmegaConf checks it.
SCHEMA: dict[str | None, dict[str, Any]] = {
    None: {"seed": int, "resume": bool, "optimized_metric": str, "torch_threads": Optional[int], "cpu_kernels": str,
           "divergence_loss": float, "stack_size": int},
    "data": {"samples_per_task": Optional[int], "calibration_size": int, "estimation_size": int, "split_seed": int,
             "eval_batch_size": int},
    "model": {"input_dim": int, "hidden_dims": list[int], "num_classes": int},
    "pretrain": {"enabled": bool, "epochs": int, "batch_size": int},
    "method": {"name": str, "stages": list[list[int]], "epochs_per_stage": int, "steps_per_stage": Optional[int],
               "reset_optimizer": bool, "batch_size": int},
}

#: Lower bounds of the keys every run has, in the order they are checked: ``(key, minimum, null)``,
#: ``null`` saying what ``null`` means where the key may be null.
MINIMA = [("seed", 0, ""), ("torch_threads", 1, "or null for torch's default"), ("stack_size", 1, ""), ("model.num_classes", 2, ""),
          ("method.epochs_per_stage", 0, ""), ("method.batch_size", 1, ""), ("pretrain.epochs", 0, ""),
          ("pretrain.batch_size", 1, ""), ("data.calibration_size", 0, ""), ("data.estimation_size", 0, ""),
          ("data.eval_batch_size", 1, ""), ("data.samples_per_task", 1, "or null for every available sample"),
          ("method.steps_per_stage", 1, "or null to train method.epochs_per_stage epochs")]


def show_value(value: Any) -> str:
    """A config value as the user would type it, on one line."""
    return str(OmegaConf.to_container(value)) if isinstance(value, (DictConfig, ListConfig)) else repr(value)


def _check_types(cfg: DictConfig) -> None:
    """Merge each known key into a schema of its type; OmegaConf refuses values that cannot convert."""
    for section, types in SCHEMA.items():
        node = cfg if section is None else cfg.get(section)
        if node is None:
            raise ConfigError(f"config group '{section}' is missing; select one, e.g. `{section}=<option>`")
        for name, kind in types.items():
            if name not in node:
                continue
            try:
                OmegaConf.merge(OmegaConf.structured(make_dataclass("Schema", [(name, kind)])), {name: node[name]})
            except OmegaConfBaseException as err:
                key = name if section is None else f"{section}.{name}"
                expected = str(kind).replace("typing.", "").removeprefix("<class '").removesuffix("'>")
                raise ConfigError(f"{key}={show_value(node[name])} has the wrong type ({str(err).splitlines()[0]}); "
                                  f"expected {expected}") from None


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def validate_stages(stages: Any, num_classes: int, key: str = "method.stages") -> list[list[int]]:
    """Check ``stages`` is a non-empty list of non-empty, disjoint class lists in ``[0, num_classes)``."""
    _require(isinstance(stages, (list, ListConfig)) and len(stages) > 0, f"{key} must be a non-empty list of class lists, e.g. [[3],[4],[7]]")
    seen: dict[int, int] = {}
    for i, stage in enumerate(stages):
        _require(isinstance(stage, (list, ListConfig)) and len(stage) > 0, f"{key}[{i}] is empty; every stage needs at least one class, e.g. [[3],[4],[7]]")
        for c in stage:
            _require(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < num_classes, f"{key}[{i}] has class {c!r}; classes must be integers in 0..{num_classes - 1}")
            _require(c not in seen, f"{key}: class {c} appears in stage {seen.get(c)} and stage {i}; each class may be trained in one stage only")
            seen[c] = i
    return [[int(c) for c in stage] for stage in stages]


def validate_config(cfg: DictConfig, known_methods: set[str]) -> None:
    """Types and ranges of the keys every run has; raise :class:`ConfigError` on the first invalid
    value (one line, names the key). Method-specific settings are each method's ``validate``."""
    _check_types(cfg)
    for key, minimum, null in MINIMA:
        value = OmegaConf.select(cfg, key, default=minimum)
        hint = f", {null}" if null else ""
        _require((value is None and bool(null)) or value >= minimum, f"{key}={value} must be >= {minimum}{hint}")
    divergence = cfg.get("divergence_loss", 25.0)
    _require(divergence > 0, f"divergence_loss={divergence} must be > 0 (nats per sample; chance is ln 10 = 2.3)")
    method = cfg.method
    _require(method.name in known_methods, f"method.name={method.name!r} is unknown; choose one of {sorted(known_methods)} (e.g. `method=sequential`)")
    metric = str(cfg.get("optimized_metric", SELECTION_SCORE))
    _require(metric.startswith("calibration/"), f"optimized_metric={metric} is not a calibration metric: a sweeper would select on it; use calibration/... (e.g. {SELECTION_SCORE})")
    known = {SELECTION_SCORE, *split_metric_keys(SELECTION_PART, int(cfg.model.num_classes))}
    _require(metric in known, f"optimized_metric={metric} is not a metric a run records; use {SELECTION_SCORE} (the selection rule as one number) or calibration/<acc, acc_target, acc_retained, f1, ...>")
    _require(cfg.get("selection") is not None, "selection is missing; conf/train.yaml sets it (selection.rule, selection.delta)")
    try:
        check_rule(cfg.selection.get("rule"), cfg.selection.get("delta"))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _require(cfg.get("trainer", {}).get("limit_test_batches") is None, "trainer.limit_test_batches has no effect: the "
             "pipeline evaluates test, calibration and estimation whole (no Lightning test loop); shorten a run with "
             "trainer.limit_train_batches and trainer.limit_val_batches")
    _require(float(cfg.data.get("std", 1.0)) > 0, f"data.std={cfg.data.get('std')} must be > 0 (images are divided by it)")
    _require(all(int(h) >= 1 for h in cfg.model.hidden_dims), f"model.hidden_dims={list(cfg.model.hidden_dims)} must hold positive sizes")


def check_finite(result_cfg: dict[str, Any]) -> None:
    """Refuse a NaN in any setting of ``result_cfg`` (:func:`resolved_result_config`; lists included), and an
    infinity anywhere but in ``divergence_loss`` (where it turns the check off): such a value trains to NaN or
    fails late."""
    for key, value in flatten(result_cfg).items():
        for item in value if isinstance(value, list) else [value]:
            for number in item if isinstance(item, list) else [item]:
                if isinstance(number, float) and (math.isnan(number) or math.isinf(number) and key != "divergence_loss"):
                    raise ConfigError(f"{key}={show_value(value)} is not a finite number; every setting must be one")


def instantiate_checked(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(node, **kwargs)``; an invalid argument becomes a ConfigError: the error's
    whole message, on one line (e.g. why a ``_target_`` does not import)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except (InstantiationException, ValueError, TypeError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ is not None else err
        raise ConfigError(f"{key}: {' '.join(str(cause).split())}") from err


def task_classes(stages: list[list[int]]) -> list[int]:
    """Classes held out for fine-tuning: the union of the stages, sorted."""
    return sorted({int(c) for stage in stages for c in stage})


def stable_hash(obj: Any) -> str:
    """SHA-256 (first 16 hex digits) of ``obj`` as canonical JSON (containers resolved first)."""
    if isinstance(obj, (DictConfig, ListConfig)):
        obj = OmegaConf.to_container(obj, resolve=True)
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolved_result_config(cfg: DictConfig) -> dict[str, Any]:
    """What ``config.json`` holds: the resolved config, only the keys that :func:`~.contract.affects_results` keeps."""
    return result_config(OmegaConf.to_container(cfg, resolve=True))
