"""Merging methods of the study: task arithmetic, TIES, DARE, averaging, and task negation.

Each task (one entry of ``method.stages``) gets its own fine-tuned copy of the pretrained
baseline, trained exactly as one stage of ``sequential`` (same epochs, batch size, optimizer).
Their task vectors ``tau_t = theta_t - theta_0`` are then merged; the scaling factor lambda is
chosen on the *calibration* split from ``method.lambda_grid`` (never on the test set).

Stages recorded: ``1..T`` are the individual fine-tuned models (each evaluated alone),
``T+1`` is the merged model (``trained_classes = "merged"``), which is the run's ``final``.
"""

from __future__ import annotations

import copy
import logging
from typing import Any, Sequence

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig

from seqft_lightning.config import instantiate_checked, stages_of
from seqft_lightning.errors import ConfigError
from seqft_lightning.io import atomic_torch_save
from seqft_lightning.merging import TaskVector
from seqft_lightning.merging.methods import MergeMethod, TaskVectorMethod
from seqft_lightning.metrics import group_accuracy
from seqft_lightning.recorder import classes_label
from seqft_lightning.runner import Runner

log = logging.getLogger(__name__)


def lambda_grid(spec: Any, defaults: Sequence[float] = ()) -> list[float]:
    """The lambda values to try: ``spec`` (a list) plus the method's own default(s); sorted,
    duplicates (to 1e-9) removed."""
    if not isinstance(spec, (ListConfig, list, tuple)) or len(spec) == 0:
        raise ConfigError(f"method.lambda_grid={spec!r} must be a non-empty list, e.g. [0.1,0.3,0.5] or ${{grid:0,1,0.05}}")
    values = [float(v) for v in spec] + [float(d) for d in defaults if d is not None]
    return sorted({round(v, 9) for v in values})


def _selected_stages(cfg: DictConfig) -> list[list[int]]:
    """The tasks whose vectors are merged: all stages, or those listed in ``method.vectors``."""
    stages = stages_of(cfg)
    chosen = cfg.method.get("vectors")
    if chosen is None:
        return stages
    bad = [i for i in chosen if not (isinstance(i, int) and 0 <= i < len(stages))]
    if bad or len(chosen) == 0:
        raise ConfigError(f"method.vectors={list(chosen)} must list stage indices in 0..{len(stages) - 1} (e.g. [0, 2] for tau_3 + tau_7)")
    return [stages[i] for i in chosen]


def _check_no_retention(runner: Runner, cfg: DictConfig) -> None:
    if runner.module.retention.name != "none":
        raise ConfigError(
            f"retention={runner.module.retention.name} applies to sequential and joint fine-tuning; "
            f"use retention=none with method={cfg.method.name}"
        )


def finetune_experts(runner: Runner, cfg: DictConfig, stages: Sequence[Sequence[int]]) -> dict[str, torch.nn.Module]:
    """Fine-tune one copy of the baseline per class group; record each as a stage; return them.

    The module's net is reset to the baseline before each task, so every expert starts from
    theta_0; training uses the sequential method's settings (``epochs_per_stage``, ``batch_size``,
    ``optimizer``).
    """
    m, net = cfg.method, runner.module.net
    base_state = copy.deepcopy(net.state_dict())
    experts = {}
    for i, classes in enumerate(stages, start=1):
        net.load_state_dict(base_state)
        loader = runner.datamodule.task_dataloader(classes, m.batch_size)
        runner.fit(loader, m.epochs_per_stage, instantiate(m.optimizer), stage=i)
        runner.record(i, classes)
        experts[classes_label(classes)] = copy.deepcopy(net)
    net.load_state_dict(base_state)
    return experts


def save_task_vectors(runner: Runner, base: torch.nn.Module, experts: dict[str, torch.nn.Module]) -> dict[str, TaskVector]:
    """tau_t = theta_t - theta_0 for every expert, saved to ``checkpoints/task_vectors.pt``."""
    vectors = {name: TaskVector.from_models(base, model) for name, model in experts.items()}
    atomic_torch_save(runner.recorder.run_dir / "checkpoints" / "task_vectors.pt", {n: v.state_dict() for n, v in vectors.items()})
    return vectors


def _calibration_scores(runner: Runner, model: torch.nn.Module, forget: Sequence[int] = ()) -> dict[str, float]:
    metrics, confusion, _ = runner.evaluate(model, runner.datamodule.val_dataloader())
    scores = {"acc": metrics["test/acc"], "acc_target": metrics["test/acc_target"], "acc_retained": metrics["test/acc_retained"]}
    if forget:
        others = [c for c in range(confusion.shape[0]) if c not in set(forget)]
        scores["acc_forget"] = group_accuracy(confusion, forget)
        scores["acc_other"] = group_accuracy(confusion, others)
    return scores


def _require_calibration(runner: Runner, cfg: DictConfig) -> None:
    if len(runner.datamodule.calib_y) == 0:
        raise ConfigError(f"method={cfg.method.name} chooses lambda on the calibration split; set data.calibration_size > 0")


def run_merge(runner: Runner, cfg: DictConfig) -> dict:
    """Fine-tune experts, merge their task vectors, pick lambda on calibration, record the result."""
    _check_no_retention(runner, cfg)
    merger: MergeMethod = instantiate_checked(cfg.method.merger, "method.merger")
    stages = _selected_stages(cfg)
    experts = finetune_experts(runner, cfg, stages)
    base = runner.module.net
    save_task_vectors(runner, base, experts)

    extra: dict[str, Any] = {"merged_vectors": list(experts)}
    if isinstance(merger, TaskVectorMethod):
        _require_calibration(runner, cfg)
        merged_vector = merger.merged_task_vector(base, experts)  # once; each lambda only rescales it
        select = cfg.method.get("select_metric", "acc")
        curve = []
        for lam in lambda_grid(cfg.method.lambda_grid, [merger.scaling_factor]):
            scores = _calibration_scores(runner, merged_vector.apply_to(base, lam))
            curve.append({"lambda": lam, **scores})
        runner.recorder.write_csv("calibration.csv", curve)
        # Ties go to the smaller lambda: the smaller step away from the pretrained weights.
        best = max(curve, key=lambda row: (row[select], -row["lambda"]))
        lam = best["lambda"]
        merged = merged_vector.apply_to(base, lam)
        extra.update({"lambda": lam, "lambda_selection": {"metric": f"calibration/{select}", "value": best[select]}})
        log.info("%s: lambda %.3g chosen on calibration %s = %.4f", cfg.method.name, lam, select, best[select])
    else:
        merged = merger.run(base, experts)
        extra["lambda"] = None
    final = runner.record(len(stages) + 1, "merged", net=merged)
    runner.recorder.save_checkpoint("merged.pt", merged)
    return {"final": final, **extra}


def run_task_negation(runner: Runner, cfg: DictConfig) -> dict:
    """Make the model forget ``method.forget``: theta = theta_0 - lambda * sum of their vectors.

    Following Ilharco et al. (ICLR 2023), lambda is the grid value that lowers the forgotten
    classes' calibration accuracy the most while keeping at least ``method.min_retained_ratio``
    (default 0.95) of the baseline's calibration accuracy on the other classes.
    """
    _check_no_retention(runner, cfg)
    _require_calibration(runner, cfg)
    forget = sorted({int(c) for c in cfg.method.forget})
    stages = stages_of(cfg)
    if sorted({c for s in stages for c in s}) != forget:
        raise ConfigError(f"method.stages={stages} must hold exactly the classes of method.forget={forget}")
    experts = finetune_experts(runner, cfg, stages)
    base = runner.module.net
    negated = -sum(save_task_vectors(runner, base, experts).values())

    floor_ratio = float(cfg.method.get("min_retained_ratio", 0.95))
    reference = _calibration_scores(runner, base, forget)
    curve = []
    for lam in lambda_grid(cfg.method.lambda_grid):
        curve.append({"lambda": lam, **_calibration_scores(runner, negated.apply_to(base, lam), forget)})
    runner.recorder.write_csv("calibration.csv", curve)
    allowed = [row for row in curve if row["acc_other"] >= floor_ratio * reference["acc_other"]]
    # lambda = 0 (the baseline itself) always qualifies, so `allowed` is never empty.
    best = min(allowed, key=lambda row: (row["acc_forget"], row["lambda"]))
    lam = best["lambda"]
    model = negated.apply_to(base, lam)
    final = runner.record(len(stages) + 1, "negated", net=model)
    runner.recorder.save_checkpoint("negated.pt", model)
    # Test confusions already recorded: stage 0 is the baseline, the last one the negated model.
    base_confusion, confusion = runner.recorder.confusions[0], runner.recorder.confusions[-1]
    others = [c for c in range(confusion.shape[0]) if c not in set(forget)]
    negation = {
        "forget_classes": forget,
        "lambda": lam,
        "min_retained_ratio": floor_ratio,
        "calibration/acc_forget": best["acc_forget"],
        "calibration/acc_other": best["acc_other"],
        "calibration/baseline_acc_forget": reference["acc_forget"],
        "calibration/baseline_acc_other": reference["acc_other"],
        "test/acc_forget": group_accuracy(confusion, forget),
        "test/acc_other": group_accuracy(confusion, others),
        "test/baseline_acc_forget": group_accuracy(base_confusion, forget),
        "test/baseline_acc_other": group_accuracy(base_confusion, others),
    }
    log.info(
        "task negation of %s: lambda %.3g; test acc on forgotten %.4f (baseline %.4f), on others %.4f (baseline %.4f)",
        forget, lam, negation["test/acc_forget"], negation["test/baseline_acc_forget"], negation["test/acc_other"], negation["test/baseline_acc_other"],
    )
    return {"final": final, "lambda": lam, "negation": negation}
