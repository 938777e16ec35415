"""Deterministic, disjoint splits of the MNIST training set, seeded by ``split_seed`` only (the study
sets it to the training seed: methods of one seed share one split), carved in this order:

1. ``calibration``: ``calibration_size`` images stratified by class (largest remainder): the
   *selection part*, which validation curves and every model-selection choice use;
2. ``estimation``: ``estimation_size`` more, stratified alike: no choice reads it, so it estimates
   what was chosen without bias;
3. ``tasks[c]``: ``samples_per_task`` of the images left of each task class ``c`` (``None``: all);
4. ``pretrain``: everything else, the pool the baseline is pretrained on (the official test set, for
   reporting only, is never touched here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from seqft_lightning.errors import DataError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Splits:
    """Index tensors (int64, sorted) into the training set."""

    pretrain: torch.Tensor
    calibration: torch.Tensor
    tasks: dict[int, torch.Tensor]
    estimation: torch.Tensor | None = None


def stratified_quotas(counts: Sequence[int], total: int) -> list[int]:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder, exact sum)."""
    counts = [int(c) for c in counts]
    n = sum(counts)
    # Integer arithmetic: quota_c = floor(counts_c * total / n) with remainder numerator rem_c / n,
    # so equal fractional parts compare equal (floats broke ties by rounding error).
    scaled = [c * int(total) for c in counts]
    quotas = [s // n for s in scaled]
    remainders = [s - q * n for s, q in zip(scaled, quotas)]
    # Hand the leftover units to the largest fractional parts; ties go to the lower class index.
    for c in sorted(range(len(counts)), key=lambda c: -remainders[c])[: int(total) - sum(quotas)]:
        quotas[c] += 1
    return quotas


def check_split_sizes(counts: Sequence[int], task_classes: Sequence[int], samples_per_task: int | None,
                      calibration_size: int, estimation_size: int = 0) -> tuple[list[int], list[int]]:
    """Refuse a split that cannot be carved from a training set with ``counts`` images per class
    (:class:`DataError`); return the calibration and estimation quotas of each class. Needs the
    counts only, so ``plan_run`` checks it from the label file before any image is read."""
    total = sum(int(c) for c in counts)
    if not 0 <= calibration_size < total:
        raise DataError(f"data.calibration_size={calibration_size} must be in [0, {total}); lower it")
    if not 0 <= estimation_size < total - calibration_size:
        raise DataError(f"data.estimation_size={estimation_size} must be in [0, {total - calibration_size}) "
                        f"(the images left after data.calibration_size={calibration_size}); lower it")
    quotas = stratified_quotas(counts, calibration_size)
    estimation = stratified_quotas(counts, estimation_size)
    for c in sorted(int(c) for c in task_classes):
        left = int(counts[c]) - quotas[c] - estimation[c]
        if samples_per_task is not None and int(samples_per_task) > left:
            raise DataError(f"data.samples_per_task={samples_per_task} exceeds the {left} training images of class {c} "
                            "left after the calibration and estimation parts; lower data.samples_per_task, "
                            "data.calibration_size or data.estimation_size")
    return quotas, estimation


def make_splits(labels: torch.Tensor, task_classes: Sequence[int], samples_per_task: int | None,
                calibration_size: int, split_seed: int, num_classes: int = 10, estimation_size: int = 0) -> Splits:
    """Carve calibration, estimation, per-task and pretraining index sets out of ``labels``
    (:class:`DataError` when they do not fit, :func:`check_split_sizes`)."""
    import torch

    labels = labels.long().cpu()
    counts = torch.bincount(labels, minlength=num_classes).tolist()
    quotas, est_quotas = check_split_sizes(counts, task_classes, samples_per_task, calibration_size, estimation_size)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(int(split_seed)))

    calibration, estimation, pretrain, tasks = [], [], [], {}
    for c in range(num_classes):
        shuffled = perm[labels[perm] == c]
        calibration.append(shuffled[: quotas[c]])
        estimation.append(shuffled[quotas[c] : quotas[c] + est_quotas[c]])
        rest = shuffled[quotas[c] + est_quotas[c] :]
        if c in task_classes:
            wanted = len(rest) if samples_per_task is None else int(samples_per_task)
            tasks[c] = torch.sort(rest[:wanted]).values
            rest = rest[wanted:]
        pretrain.append(rest)
    return Splits(pretrain=torch.sort(torch.cat(pretrain)).values, calibration=torch.sort(torch.cat(calibration)).values,
                  tasks=tasks, estimation=torch.sort(torch.cat(estimation)).values)
