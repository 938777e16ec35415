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
from typing import TYPE_CHECKING, Any, Sequence

import torch
from hydra.utils import instantiate

from seqft_lightning import contract
from seqft_lightning.cost import tensor_bytes
from seqft_lightning.merging import TaskVector
from seqft_lightning.merging.mergers import Merger, TaskVectorMerger
from seqft_lightning.methods.base import MethodResult
from seqft_lightning.methods.settings import forget_classes, lambda_grid, merged_stages
from seqft_lightning.metrics import group_accuracy
from seqft_lightning.recorder import classes_label
from seqft_lightning.selection import select

if TYPE_CHECKING:
    from seqft_lightning.plan import RunPlan
    from seqft_lightning.runner import Runner

log = logging.getLogger(__name__)

# -- running ----------------------------------------------------------------------------------------
def finetune_experts(runner: Runner, plan: RunPlan, stages: Sequence[Sequence[int]]) -> dict[str, torch.nn.Module]:
    """Fine-tune one copy of the baseline per class group; record each as a stage; return them.

    The net is reset to the baseline before each task, so every expert starts from theta_0;
    training uses the sequential method's settings (``epochs_per_stage``, ``batch_size``,
    ``optimizer``).
    """
    m, net = plan.cfg.method, runner.net
    base_state = copy.deepcopy(net.state_dict())
    experts = {}
    for stage, classes in enumerate(stages, start=1):
        net.load_state_dict(base_state)
        loader = runner.datamodule.task_dataloader(classes, m.batch_size)
        runner.fit(loader, m.epochs_per_stage, instantiate(m.optimizer), stage=stage)
        runner.record_stage(stage, classes)
        experts[classes_label(classes)] = copy.deepcopy(net)
    net.load_state_dict(base_state)
    return experts


def save_task_vectors(runner: Runner, base: torch.nn.Module, experts: dict[str, torch.nn.Module]) -> dict[str, TaskVector]:
    """tau_t = theta_t - theta_0 for every expert, saved to ``checkpoints/task_vectors.pt``."""
    vectors = {name: TaskVector.from_models(base, model) for name, model in experts.items()}
    runner.recorder.save_checkpoint(contract.TASK_VECTORS_CHECKPOINT, {n: v.state_dict() for n, v in vectors.items()})
    return vectors


def _calibration_scores(runner: Runner, model: torch.nn.Module, forget: Sequence[int] = ()) -> dict[str, float]:
    """Calibration accuracies of ``model`` (fractions): overall, target, retained (+ forget/other)."""
    evaluation = runner.evaluate(model, split="calibration")
    metrics = evaluation.metrics(runner.target_classes, prefix="calibration")
    scores = {name: metrics[f"calibration/{name}"] for name in ("acc", "acc_target", "acc_retained")}
    if forget:
        confusion = evaluation.confusion
        others = [c for c in range(confusion.shape[0]) if c not in set(forget)]
        scores["acc_forget"] = group_accuracy(confusion, forget)
        scores["acc_other"] = group_accuracy(confusion, others)
    return scores


def run_merge(runner: Runner, plan: RunPlan) -> MethodResult:
    """Fine-tune experts, merge their task vectors, pick lambda on calibration, record the result."""
    cfg = plan.cfg
    merger: Merger = instantiate(cfg.method.merger)
    stages = merged_stages(cfg)
    experts = finetune_experts(runner, plan, stages)
    base = runner.net
    vectors = save_task_vectors(runner, base, experts)

    fields: dict[str, Any] = {"merged_vectors": list(experts)}
    if isinstance(merger, TaskVectorMerger):
        merged_vector = merger.merged_task_vector(base, experts)  # once; each lambda only rescales it
        curve = []
        for lambda_ in lambda_grid(cfg.method.lambda_grid, [merger.lambda_]):
            curve.append({"lambda": lambda_, **_calibration_scores(runner, merged_vector.apply_to(base, lambda_))})
        runner.recorder.write_csv(contract.CALIBRATION_FILE, curve)
        # The study's one rule, on calibration; the grid is in ascending lambda, so ties go to
        # the smaller lambda: the smaller step away from the pretrained weights.
        rule = cfg.get("selection") or {}
        baseline_retained = runner.recorder.stages()[0].metrics["calibration/acc_retained"]
        chosen = select(curve, baseline_retained, rule.get("rule", "target_at_retained"), float(rule.get("delta", 0.01)))
        best = curve[chosen.index]
        lambda_ = best["lambda"]
        merged = merged_vector.apply_to(base, lambda_)
        # For the report's trade-off plot: the whole curve on test, once lambda is chosen.
        test_curve = []
        for row in curve:
            metrics = runner.evaluate(merged_vector.apply_to(base, row["lambda"])).metrics(runner.target_classes)
            test_curve.append({"lambda": row["lambda"], **{k: metrics[f"test/{k}"] for k in ("acc", "acc_target", "acc_retained")}})
        runner.recorder.write_csv(contract.LAMBDA_TEST_FILE, test_curve)
        fields.update({"lambda": lambda_, "lambda_selection": {**chosen.describe(), **{f"calibration/{k}": best[k] for k in ("acc", "acc_target", "acc_retained")}}})
        log.info("%s: lambda %.3g chosen on calibration by %s (target %.4f, retained %.4f%s)", cfg.method.name, lambda_,
                 chosen.rule, best["acc_target"], best["acc_retained"], ", fallback" if chosen.fallback else "")
    else:
        merged = merger.run(base, experts)
        fields["lambda"] = None
    final = runner.record_stage(len(stages) + 1, contract.TRAINED_MERGED, net=merged)
    runner.recorder.save_net("merged.pt", merged)
    vectors_bytes = sum(tensor_bytes(v.state_dict()) for v in vectors.values())
    return MethodResult(final=final, fields=fields, net=merged, extra_memory_bytes=vectors_bytes)


def run_task_negation(runner: Runner, plan: RunPlan) -> MethodResult:
    """Make the model forget ``method.forget``: theta = theta_0 - lambda * sum of their vectors.

    Following Ilharco et al. (ICLR 2023), lambda is the grid value that lowers the forgotten
    classes' calibration accuracy the most while keeping at least ``method.min_retained_ratio``
    (default 0.95) of the baseline's calibration accuracy on the other classes.
    """
    cfg = plan.cfg
    forget = forget_classes(cfg)
    experts = finetune_experts(runner, plan, plan.stages)
    base = runner.net
    vectors = save_task_vectors(runner, base, experts)
    negated = -sum(vectors.values())

    floor_ratio = float(cfg.method.get("min_retained_ratio", 0.95))
    reference = _calibration_scores(runner, base, forget)
    curve = []
    # lambda = 0 (the baseline itself) is always tried: it always keeps the floor.
    for lambda_ in lambda_grid(cfg.method.lambda_grid, [0.0]):
        curve.append({"lambda": lambda_, **_calibration_scores(runner, negated.apply_to(base, lambda_), forget)})
    runner.recorder.write_csv(contract.CALIBRATION_FILE, curve)
    allowed = [row for row in curve if row["acc_other"] >= floor_ratio * reference["acc_other"]]
    best = min(allowed, key=lambda row: (row["acc_forget"], row["lambda"]))
    lambda_ = best["lambda"]
    if lambda_ == 0:
        log.warning("task negation: no lambda > 0 in method.lambda_grid keeps %.0f%% of the other classes' accuracy; the result is the baseline", 100 * floor_ratio)
    model = negated.apply_to(base, lambda_)
    final = runner.record_stage(len(plan.stages) + 1, contract.TRAINED_NEGATED, net=model)
    runner.recorder.save_net("negated.pt", model)
    # Test evaluations already recorded: stage 0 is the baseline, the last one the negated model.
    records = runner.recorder.stages()
    base_confusion, confusion = records[0].evaluation.confusion, records[-1].evaluation.confusion
    others = [c for c in range(confusion.shape[0]) if c not in set(forget)]
    negation = {
        "forget_classes": forget,
        "lambda": lambda_,
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
        forget, lambda_, negation["test/acc_forget"], negation["test/baseline_acc_forget"], negation["test/acc_other"], negation["test/baseline_acc_other"],
    )
    vectors_bytes = sum(tensor_bytes(v.state_dict()) for v in vectors.values())
    return MethodResult(final=final, fields={"lambda": lambda_, "negation": negation}, net=model, extra_memory_bytes=vectors_bytes)


