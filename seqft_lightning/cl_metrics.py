"""Continual-learning metrics over an accuracy matrix: ``R[i, j]`` = accuracy (fraction) on task ``j``
after training stage ``i`` (``i = 0..T-1``, stage ``i`` trains task ``i``); shape ``[T, T']`` with
``T' >= T``, columns ``j >= T`` are ignored.
Forgetting is **positive when accuracy was lost**, backward transfer **negative**. With one stage
both are undefined: NaN, never 0.0 (which would read as "no forgetting")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import ArrayLike

from seqft_lightning.metrics import group_accuracy


def _as_matrix(R: ArrayLike) -> np.ndarray:
    """``R`` as a float ``[T, T']`` array with ``T >= 1`` and ``T' >= T``."""
    m = np.asarray(R, dtype=float)
    if m.ndim != 2 or m.shape[0] < 1 or m.shape[1] < m.shape[0]:
        raise ValueError(f"accuracy matrix must have shape [T, T'] with 1 <= T <= T', got {m.shape}")
    return m


def average_accuracy(R: ArrayLike) -> float:
    """Mean final accuracy over the ``T`` trained tasks: ``mean_{j<T} R[T-1, j]`` (fraction)."""
    m = _as_matrix(R)
    return float(m[-1, : m.shape[0]].mean())


def forgetting_matrix(R: ArrayLike, trained_at: Sequence[int] | None = None) -> np.ndarray:
    """Forgetting of every task after every stage, the one definition of the project: ``F[k, j] =
    max_{t_j <= i < k} R[i, j] − R[k, j]`` for ``k > t_j = trained_at[j]`` (default ``j``), the row after
    which task ``j`` had been trained: its best accuracy since it was trained minus its accuracy now.
    Positive = accuracy lost; NaN where undefined (``k <= t_j``, or a task never trained). Unlike the
    max over *all* earlier rows (Chaudhry et al. 2018), a drop from the pretrained accuracy is not
    counted as forgetting of what the stage learned."""
    m = np.asarray(R, dtype=float)
    F = np.full(m.shape, np.nan)
    for j, t in enumerate(range(m.shape[1]) if trained_at is None else trained_at):
        for k in range(t + 1, m.shape[0]) if t is not None and t >= 0 else []:  # t < 0: never trained
            F[k, j] = m[t:k, j].max() - m[k, j]
    return F


def per_task_forgetting(R: ArrayLike) -> np.ndarray:
    """Forgetting ``f_j = max_{j <= i < T-1} R[i, j] − R[T-1, j]`` of each earlier task ``j < T-1`` after
    the last stage (:func:`forgetting_matrix`); positive = accuracy lost; shape ``[T-1]``."""
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
    return float("nan") if t == 1 else float((m[t - 1, : t - 1] - np.diag(m)[: t - 1]).mean())


def accuracy_matrix_from_confusions(confusions: Sequence[np.ndarray], task_classes: Sequence[Sequence[int]]) -> np.ndarray:
    """``R[i, j]``: fraction of the test samples of task ``j``'s classes that ``confusions[i]`` (rows
    true, columns predicted; after stage ``i``) has right; NaN for a task without samples. An extra
    last column pools the classes in no task, if there are any."""
    mats = np.asarray([np.asarray(cm, dtype=float) for cm in confusions])
    if mats.ndim != 3 or len(mats) == 0 or mats.shape[1] != mats.shape[2]:
        raise ValueError(f"need one or more confusion matrices, all [C, C]; got shape {mats.shape}")
    n_classes = mats.shape[1]
    groups = [sorted({int(c) for c in cls}) for cls in task_classes]
    if any(not 0 <= c < n_classes for g in groups for c in g):
        raise ValueError(f"task classes {groups} out of range 0..{n_classes - 1}")
    rest = [c for c in range(n_classes) if all(c not in g for g in groups)]
    groups += [rest] if rest else []
    return np.array([[group_accuracy(torch.as_tensor(cm), g) for g in groups] for cm in mats])


def continual_summary(confusions: Sequence[np.ndarray], trained_stages: Sequence[Sequence[int]],
                       task_groups: Sequence[Sequence[int]]) -> dict[str, float]:
    """``cl/avg_acc``, ``cl/forgetting``, ``cl/bwt`` from the confusion matrix after each training stage:
    forgetting and BWT over ``trained_stages`` (the class groups trained, one per confusion;
    ``[[3, 4, 7]]`` for joint), ``cl/avg_acc`` the mean final accuracy over the study's tasks
    ``task_groups``, so that sequential and joint report it over the same tasks."""
    R = accuracy_matrix_from_confusions(confusions, trained_stages)
    final = accuracy_matrix_from_confusions(confusions[-1:], task_groups)[0, : len(task_groups)]
    return {"cl/avg_acc": float(np.mean(final)), "cl/forgetting": forgetting(R), "cl/bwt": backward_transfer(R)}
