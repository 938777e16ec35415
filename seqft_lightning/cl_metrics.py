"""Continual-learning metrics over an accuracy matrix.

``R[i, j]`` = accuracy (fraction) on task ``j`` after training stage ``i`` (``i = 0..T-1``, stage
``i`` trains task ``i``); shape ``[T, T']`` with ``T' >= T``, columns ``j >= T`` are ignored.
Forgetting is **positive when accuracy was lost**, backward transfer **negative**. With one stage
both are undefined: NaN, never 0.0 (which would read as "no forgetting").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

def _as_matrix(R: ArrayLike) -> np.ndarray:
    """``R`` as a float ``[T, T']`` array with ``T >= 1`` and ``T' >= T``."""
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < m.shape[0]:
        raise ValueError(f"accuracy matrix must have shape [T, T'] with 1 <= T <= T', got {m.shape}")
    return m


def average_accuracy(R: ArrayLike) -> float:
    """Mean final accuracy over the ``T`` trained tasks: ``mean_{j<T} R[T-1, j]`` (fraction)."""
    m = _as_matrix(R)
    t = m.shape[0]
    return float(m[t - 1, :t].mean())


def forgetting_matrix(R: ArrayLike, trained_at: Sequence[int] | None = None) -> np.ndarray:
    """Forgetting of every task after every stage: the one definition of the project.

    ``F[k, j] = max_{t_j <= i < k} R[i, j] − R[k, j]`` for ``k > t_j``, where ``t_j = trained_at[j]``
    is the row after which task ``j`` had been trained (default ``t_j = j``): the best accuracy the
    task had *since it was trained*, minus its accuracy now. Positive = accuracy lost. NaN where
    undefined (``k <= t_j``, or a task never trained). With a pretrained start this differs from
    the max over *all* earlier rows (Chaudhry et al. 2018) only when a task was better before its
    own stage; a drop from the pretrained accuracy is not counted as forgetting of what the
    stage learned.
    """
    m = np.asarray(R, dtype=float)
    stages, tasks = m.shape
    starts = list(range(tasks)) if trained_at is None else list(trained_at)
    F = np.full((stages, tasks), np.nan)
    for j, t in enumerate(starts):
        if t is None or t < 0:
            continue
        for k in range(t + 1, stages):
            F[k, j] = m[t:k, j].max() - m[k, j]
    return F


def per_task_forgetting(R: ArrayLike) -> np.ndarray:
    """Forgetting of each earlier task ``j < T-1`` after the last stage (row ``i`` trained task ``i``).

    ``f_j = max_{j <= i < T-1} R[i, j] − R[T-1, j]`` (:func:`forgetting_matrix`). Positive =
    accuracy lost. Shape ``[T-1]`` (empty for ``T = 1``).
    """
    m = _as_matrix(R)
    t = m.shape[0]
    return forgetting_matrix(m[:, :t])[t - 1, : t - 1]


def forgetting(R: ArrayLike) -> float:
    """Average forgetting ``mean_j f_j`` over ``j < T-1``; positive = accuracy lost; nan if ``T = 1``."""
    f = per_task_forgetting(R)
    return float(f.mean()) if f.size else float("nan")


def backward_transfer(R: ArrayLike) -> float:
    """BWT (Lopez-Paz & Ranzato 2017): ``mean_{j<T-1} (R[T-1, j] − R[j, j])``; negative = lost."""
    m = _as_matrix(R)
    t = m.shape[0]
    if t == 1:
        return float("nan")
    return float((m[t - 1, : t - 1] - np.diag(m)[: t - 1]).mean())


def accuracy_matrix_from_confusions(confusions: Sequence[np.ndarray], task_classes: Sequence[Sequence[int]]) -> np.ndarray:
    """``R[i, j]``: fraction of the test samples of task ``j``'s classes that ``confusions[i]`` (rows
    true, columns predicted; after stage ``i``) has right; NaN for a task without samples. An extra
    last column pools the classes in no task, if there are any."""
    if len(confusions) == 0:
        raise ValueError("need at least one confusion matrix")
    mats = [np.asarray(cm, dtype=float) for cm in confusions]
    n_classes = mats[0].shape[0]
    for cm in mats:
        if cm.shape != (n_classes, n_classes):
            raise ValueError(f"confusion matrices must all be [C, C] with C={n_classes}, got {cm.shape}")
    groups = [sorted({int(c) for c in cls}) for cls in task_classes]
    for g in groups:
        if any(not 0 <= c < n_classes for c in g):
            raise ValueError(f"task classes {g} out of range 0..{n_classes - 1}")
    used = {c for g in groups for c in g}
    rest = [c for c in range(n_classes) if c not in used]
    if rest:
        groups.append(rest)

    R = np.empty((len(mats), len(groups)))
    for i, cm in enumerate(mats):
        for j, g in enumerate(groups):
            total = cm[g, :].sum()
            R[i, j] = cm[g, g].sum() / total if total > 0 else float("nan")
    return R


def continual_summary(confusions: Sequence[np.ndarray], trained_stages: Sequence[Sequence[int]],
                       task_groups: Sequence[Sequence[int]]) -> dict[str, float]:
    """``cl/avg_acc``, ``cl/forgetting``, ``cl/bwt`` from the confusion matrix after each training stage.

    Forgetting and BWT come from the matrix over ``trained_stages`` (the class groups trained, one
    per confusion; ``[[3, 4, 7]]`` for joint); ``cl/avg_acc`` is the mean final accuracy over the
    study's tasks ``task_groups``, so that sequential and joint report it over the same tasks.
    """
    R = accuracy_matrix_from_confusions(confusions, trained_stages)
    final = accuracy_matrix_from_confusions(confusions[-1:], task_groups)[0, : len(task_groups)]
    return {
        "cl/avg_acc": float(np.mean(final)),
        "cl/forgetting": forgetting(R),
        "cl/bwt": backward_transfer(R),
    }
