"""What each method is configured with, checked before any work, without torch: ``validate_*`` refuse
bad settings with a one-line :class:`~seqft_lightning.errors.ConfigError` naming the key (a merger's
own constructor check runs last); ``*_groups`` are the class groups a method trains in the stage loop."""

from __future__ import annotations

from typing import Any, Sequence

from omegaconf import DictConfig, ListConfig

from seqft_lightning.config import instantiate_checked, task_classes, validate_stages
from seqft_lightning.contract import NO_RETENTION, RETIRED_KEYS, retention_name
from seqft_lightning.errors import ConfigError


def validate_stages_setting(cfg: DictConfig) -> None:
    """``method.stages`` must be disjoint, non-empty class groups of the model's classes."""
    validate_stages(cfg.method.stages, int(cfg.model.num_classes))


def sequential_groups(stages: list[list[int]]) -> list[list[int]]:
    """One stage per entry of ``method.stages``, in order."""
    return [list(s) for s in stages]


def joint_groups(stages: list[list[int]]) -> list[list[int]]:
    """One stage on the union of every stage's task samples (shuffled together)."""
    return [task_classes(stages)]


def no_groups(stages: list[list[int]]) -> list[list[int]]:
    """Nothing is trained through the stage loop (the baseline; merging trains its own experts)."""
    return []


def lambda_grid(spec: Any, defaults: Sequence[float] = ()) -> list[float]:
    """The lambda values to try: the list ``spec`` plus the method's ``defaults``, sorted, deduplicated to 1e-9."""
    if not isinstance(spec, (ListConfig, list, tuple)) or len(spec) == 0:
        raise ConfigError(f"method.lambda_grid={spec!r} must be a non-empty list, e.g. [0.1,0.3,0.5] or ${{grid:0,1,0.05}}")
    try:
        values = [float(v) for v in spec] + [float(d) for d in defaults if d is not None]
    except (TypeError, ValueError):
        raise ConfigError(f"method.lambda_grid={list(spec)} must hold numbers, e.g. [0.1,0.3,0.5]") from None
    return sorted({round(v, 9) for v in values})


def merged_stages(cfg: DictConfig) -> list[list[int]]:
    """The tasks whose vectors are merged: all stages, or those listed in ``method.vectors``."""
    stages = validate_stages(cfg.method.stages, int(cfg.model.num_classes))
    if (chosen := cfg.method.get("vectors")) is None:
        return stages
    if len(chosen) == 0 or not all(isinstance(i, int) and 0 <= i < len(stages) for i in chosen):
        raise ConfigError(f"method.vectors={list(chosen)} must list stage indices in 0..{len(stages) - 1} (e.g. [0, 2] for tau_3 + tau_7)")
    return [stages[i] for i in chosen]


def _check_common(cfg: DictConfig) -> None:
    """Merging trains no stage loop (retention=none) and picks lambda on the calibration split."""
    if (retention := retention_name(cfg)) != NO_RETENTION:
        raise ConfigError(f"retention={retention} applies to sequential and joint fine-tuning; "
                          f"use retention=none with method={cfg.method.name}")
    if int(cfg.data.calibration_size) == 0:
        raise ConfigError(f"data.calibration_size=0: method={cfg.method.name} chooses lambda on the calibration split; set data.calibration_size > 0")


def validate_merge(cfg: DictConfig) -> None:
    """Refuse bad merging settings: retention, calibration size, grid, vectors, then (torch) the merger's arguments."""
    _check_common(cfg)
    merged_stages(cfg)
    if cfg.method.get("select_metric") is not None:
        raise ConfigError(f"method.select_metric={cfg.method.select_metric} is gone: "
                          f"{RETIRED_KEYS['method.select_metric']}")
    if "lambda_grid" in cfg.method:
        lambda_grid(cfg.method.lambda_grid)
    merger = instantiate_checked(cfg.method.merger, "method.merger")  # its constructor checks its arguments
    if getattr(merger, "lambda_", None) is not None and "lambda_grid" not in cfg.method:
        raise ConfigError(f"method.lambda_grid is missing: {type(merger).__name__} chooses lambda from a grid, e.g. method.lambda_grid=[0,0.5,1]")


def forget_classes(cfg: DictConfig) -> list[int]:
    forget = cfg.method.get("forget")
    num_classes = int(cfg.model.num_classes)
    if not isinstance(forget, (list, ListConfig)) or len(forget) == 0:
        raise ConfigError(f"method.forget={forget!r} must list the classes to forget, e.g. method.forget=[3]")
    if any(not isinstance(c, int) or not 0 <= c < num_classes for c in forget):
        raise ConfigError(f"method.forget={list(forget)} must hold classes in 0..{num_classes - 1}")
    return sorted({int(c) for c in forget})


def validate_negation(cfg: DictConfig) -> None:
    """Refuse bad negation settings: ``forget`` first (``stages`` derive from it), then the rest."""
    forget = forget_classes(cfg)
    _check_common(cfg)
    stages = validate_stages(cfg.method.stages, int(cfg.model.num_classes))
    if task_classes(stages) != forget:
        raise ConfigError(f"method.stages={stages} must hold exactly the classes of method.forget={forget} (leave method.stages unset)")
    lambda_grid(cfg.method.get("lambda_grid"))
    ratio = cfg.method.get("min_retained_ratio", 0.95)
    if not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ConfigError(f"method.min_retained_ratio={ratio!r} must be a fraction in [0, 1], e.g. 0.95")
