"""Merging methods: task arithmetic, TIES, DARE, averaging, and task negation. Each task (entry of
``method.stages``) gets its own copy of the baseline, fine-tuned as one stage of ``sequential``; their
task vectors ``tau_t = theta_t - theta_0`` are merged with lambda chosen from ``method.lambda_grid``
on the *calibration* split. Stages: ``1..T`` the experts, ``T+1`` the merged model (``final``)."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any, Sequence

import torch
from hydra.utils import instantiate

import seqft_lightning.contract as contract
from seqft_lightning.cost import tensor_bytes
from seqft_lightning.merging.task_vector import TaskVector
from seqft_lightning.merging.mergers import Merger, TaskVectorMerger
from seqft_lightning.methods.base import MethodResult
from seqft_lightning.methods.settings import forget_classes, lambda_grid, merged_stages
from seqft_lightning.metrics import group_accuracy
from seqft_lightning.recorder import classes_label
from seqft_lightning.selection import select

if TYPE_CHECKING:
    from seqft_lightning.run_plan import RunPlan
    from seqft_lightning.runner import Runner

log = logging.getLogger(__name__)
ACCURACIES = ("acc", "acc_target", "acc_retained")


def _finetune_experts(runner: Runner, plan: RunPlan, stages: Sequence[Sequence[int]]) -> tuple[dict, dict, int]:
    """Fine-tune and record a copy of the baseline per class group as ``sequential`` would (the expert
    of ``method.stages[j]`` is stage ``j + 1`` whichever ``method.vectors`` picks); save their task
    vectors ``tau_t = theta_t - theta_0``. Returns the experts, the vectors and their bytes."""
    m, net = plan.cfg.method, runner.net
    base_state = copy.deepcopy(net.state_dict())
    experts = {}
    for classes in stages:
        stage = plan.stages.index(list(classes)) + 1
        net.load_state_dict(base_state)
        loader = runner.datamodule.task_dataloader(classes, m.batch_size)
        runner.fit(loader, m.epochs_per_stage, instantiate(m.optimizer), stage=stage)
        runner.record_stage(stage, classes)
        experts[classes_label(classes)] = copy.deepcopy(net)
    net.load_state_dict(base_state)
    vectors = {name: TaskVector.from_models(net, model) for name, model in experts.items()}
    saved = {name: v.state_dict() for name, v in vectors.items()}
    runner.recorder.save_checkpoint(contract.TASK_VECTORS_CHECKPOINT, saved)
    return experts, vectors, sum(tensor_bytes(sd) for sd in saved.values())


def _forget_other(confusion: torch.Tensor, forget: Sequence[int]) -> dict[str, float]:
    """Accuracies (fractions) on the ``forget`` classes and on all the other classes."""
    others = [c for c in range(confusion.shape[0]) if c not in forget]
    return {"acc_forget": group_accuracy(confusion, forget), "acc_other": group_accuracy(confusion, others)}


def _scores(runner: Runner, model: torch.nn.Module, split: str = "calibration", forget: Sequence[int] = ()) -> dict:
    """Accuracies of ``model`` on ``split`` (fractions): overall, target, retained (+ forget/other)."""
    evaluation = runner.evaluate(model, split=split)
    metrics = evaluation.metrics(runner.target_classes, prefix=split)
    scores = {name: metrics[f"{split}/{name}"] for name in ACCURACIES}
    if forget:
        scores.update(_forget_other(evaluation.confusion, forget))
    return scores


def run_merge(runner: Runner, plan: RunPlan) -> MethodResult:
    """Fine-tune experts, merge their task vectors, pick lambda on calibration, record the result."""
    cfg = plan.cfg
    merger: Merger = instantiate(cfg.method.merger)
    experts, _, vectors_bytes = _finetune_experts(runner, plan, merged_stages(cfg))
    base = runner.net
    fields: dict[str, Any] = {"merged_vectors": list(experts)}
    if isinstance(merger, TaskVectorMerger):
        merged_vector = merger.merged_task_vector(base, experts)  # once; each lambda only rescales it
        grid = lambda_grid(cfg.method.lambda_grid, [merger.lambda_])
        search = [{"lambda": lam, **_scores(runner, merged_vector.apply_to(base, lam))} for lam in grid]
        runner.recorder.write_csv(contract.CALIBRATION_FILE, search)
        # The study's one rule, on calibration; the grid is in ascending lambda, so ties go to
        # the smaller lambda: the smaller step away from the pretrained weights.
        baseline_retained = runner.recorder.stages[0].metrics["calibration/acc_retained"]
        chosen = select(search, baseline_retained, cfg.selection.rule, float(cfg.selection.delta))
        best = search[chosen.index]
        lambda_ = best["lambda"]
        merged = merged_vector.apply_to(base, lambda_)
        # For the report's trade-off plot: the whole λ search on test, once lambda is chosen.
        test_search = [{"lambda": lam, **_scores(runner, merged_vector.apply_to(base, lam), "test")} for lam in grid]
        runner.recorder.write_csv(contract.LAMBDA_TEST_FILE, test_search)
        selection = {**chosen.describe(), **{f"calibration/{k}": best[k] for k in ACCURACIES}}
        fields.update({"lambda": lambda_, "lambda_selection": selection})
        log.info("%s: lambda %.3g chosen on calibration by %s (target %.2f %%, retained %.2f %%%s)", cfg.method.name,
                 lambda_, chosen.rule, 100 * best["acc_target"], 100 * best["acc_retained"],
                 ", fallback" if chosen.fallback else "")
    else:
        merged = merger.run(base, experts)
        fields["lambda"] = None
    final = runner.record_stage(len(plan.stages) + 1, contract.TRAINED_MERGED, net=merged)
    runner.recorder.save_net("merged.pt", merged)
    return MethodResult(final=final, fields=fields, net=merged, extra_memory_bytes=vectors_bytes)


def run_task_negation(runner: Runner, plan: RunPlan) -> MethodResult:
    """Forget ``method.forget``: theta = theta_0 - lambda * sum of their vectors, lambda being the grid
    value that lowers their calibration accuracy most while keeping at least ``min_retained_ratio``
    (default 0.95) of the baseline's on the other classes (Ilharco et al., ICLR 2023)."""
    cfg = plan.cfg
    forget = forget_classes(cfg)
    _, vectors, vectors_bytes = _finetune_experts(runner, plan, plan.stages)
    base = runner.net
    negated = -sum(vectors.values())
    floor_ratio = float(cfg.method.get("min_retained_ratio", 0.95))
    reference = _scores(runner, base, forget=forget)
    # lambda = 0 (the baseline itself) is always tried: it always keeps the floor.
    grid = lambda_grid(cfg.method.lambda_grid, [0.0])
    search = [{"lambda": lam, **_scores(runner, negated.apply_to(base, lam), forget=forget)} for lam in grid]
    runner.recorder.write_csv(contract.CALIBRATION_FILE, search)
    allowed = [row for row in search if row["acc_other"] >= floor_ratio * reference["acc_other"]]
    best = min(allowed, key=lambda row: (row["acc_forget"], row["lambda"]))
    lambda_ = best["lambda"]
    if lambda_ == 0:
        log.warning("task negation: no lambda > 0 in method.lambda_grid keeps %.0f%% of the other classes' accuracy; "
                    "the result is the baseline", 100 * floor_ratio)
    model = negated.apply_to(base, lambda_)
    final = runner.record_stage(len(plan.stages) + 1, contract.TRAINED_NEGATED, net=model)
    runner.recorder.save_net("negated.pt", model)
    # Test evaluations already recorded: stage 0 is the baseline, the last one the negated model.
    test, test_baseline = (_forget_other(runner.recorder.stages[i].evaluation.confusion, forget) for i in (-1, 0))
    rows = {"calibration/": best, "calibration/baseline_": reference, "test/": test, "test/baseline_": test_baseline}
    negation = {"forget_classes": forget, "lambda": lambda_, "min_retained_ratio": floor_ratio,
                **{f"{prefix}{k}": row[k] for prefix, row in rows.items() for k in ("acc_forget", "acc_other")}}
    log.info("task negation of %s: lambda %.3g; test acc on forgotten %.2f %% (baseline %.2f %%), on others %.2f %% "
             "(baseline %.2f %%)", forget, lambda_, *(100 * negation[k] for k in (
                 "test/acc_forget", "test/baseline_acc_forget", "test/acc_other", "test/baseline_acc_other")))
    fields = {"lambda": lambda_, "negation": negation}
    # Its rule as one number: how much of the forgotten classes' calibration accuracy is gone (the floor holds)
    return MethodResult(final=final, fields=fields, net=model, extra_memory_bytes=vectors_bytes,
                        selection_score=1.0 - best["acc_forget"])
