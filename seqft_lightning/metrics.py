"""Metric bookkeeping shared by every method: flat test-metric dicts and ``stages.csv`` rows. Accuracies,
precisions, recalls and F1 scores are fractions in [0, 1]; losses mean cross-entropy in nats per sample.
"target": the samples of the task classes; "retained": those of every other class."""

from __future__ import annotations

from typing import Sequence

import torch


def group_accuracy(confusion: torch.Tensor, classes: Sequence[int]) -> float:
    """Accuracy over the samples whose true class is in ``classes`` (``confusion[i, j]`` counts samples
    of true class ``i`` predicted as ``j``); NaN when the group has no samples."""
    classes = list(classes)
    rows = confusion[classes].double()
    total = rows.sum()
    return float(rows[:, classes].diagonal().sum() / total) if total > 0 else float("nan")


def per_class_prf(confusion: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class precision, recall and F1 from a confusion matrix (0 where undefined)."""
    c = confusion.double()
    tp = c.diagonal()
    predicted, actual = c.sum(0), c.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    return precision, recall, f1


def flat_metrics(confusion: torch.Tensor, loss_sum_per_class: torch.Tensor, target_classes: Sequence[int],
                 prefix: str = "test") -> dict[str, float]:
    """The flat metric dict of the contract from one confusion matrix: ``{prefix}/acc`` (micro),
    ``/precision``, ``/recall``, ``/f1`` (macro), ``/loss`` (mean CE), ``/acc_target``, ``/acc_retained``
    and per class ``k``: ``/acc_class_k`` (its recall), ``/precision_class_k``, ``/f1_class_k``, ``/loss_class_k``."""
    confusion = confusion.detach().cpu()
    loss_sum_per_class = loss_sum_per_class.detach().cpu().double()
    num_classes = confusion.shape[0]
    support = confusion.sum(1).double()
    precision, recall, f1 = per_class_prf(confusion)
    retained = [c for c in range(num_classes) if c not in set(target_classes)]
    out = {f"{prefix}/{k}": v for k, v in group_row(confusion, loss_sum_per_class, range(num_classes)).items()}
    out[f"{prefix}/acc_target"] = group_accuracy(confusion, target_classes)
    out[f"{prefix}/acc_retained"] = group_accuracy(confusion, retained)
    for k in range(num_classes):
        out[f"{prefix}/acc_class_{k}"] = float(recall[k])
        out[f"{prefix}/precision_class_{k}"] = float(precision[k])
        out[f"{prefix}/f1_class_{k}"] = float(f1[k])
        out[f"{prefix}/loss_class_{k}"] = float(loss_sum_per_class[k] / support[k]) if support[k] > 0 else float("nan")
    return out


def group_row(confusion: torch.Tensor, loss_sum: torch.Tensor, classes: Sequence[int]) -> dict[str, float]:
    """acc (micro), macro precision/recall/F1 and mean loss over the samples of ``classes``."""
    classes = list(classes)
    precision, recall, f1 = per_class_prf(confusion)
    support = confusion[classes].sum().double()
    return {
        "acc": group_accuracy(confusion, classes),
        "precision": float(precision[classes].mean()),
        "recall": float(recall[classes].mean()),
        "f1": float(f1[classes].mean()),
        "loss": float(loss_sum.double()[classes].sum() / support) if support > 0 else float("nan"),
    }


def stage_rows(stage: int, trained_classes: str, confusion: torch.Tensor, loss_sum_per_class: torch.Tensor,
               target_classes: Sequence[int]) -> list[dict]:
    """Long-format ``stages.csv`` rows for one evaluation: all, target, retained, each class (for the
    groups, precision, recall and F1 are macro averages; ``acc`` is micro)."""
    confusion, loss_sum = confusion.detach().cpu(), loss_sum_per_class.detach().cpu()
    num_classes = confusion.shape[0]
    retained = [c for c in range(num_classes) if c not in set(target_classes)]
    groups = {"all": range(num_classes), "target": target_classes, "retained": retained}
    groups.update({f"class_{k}": [k] for k in range(num_classes)})
    return [{"stage": stage, "trained_classes": trained_classes, "evaluated": name,
             **group_row(confusion, loss_sum, classes)} for name, classes in groups.items()]
