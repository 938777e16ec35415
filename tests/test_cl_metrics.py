"""Continual-learning metrics against hand-computed 3×3 (and 3×4) matrices."""

import math

import numpy as np
import pytest

from seqft_lightning.cl_metrics import (
    accuracy_matrix_from_confusions,
    average_accuracy,
    backward_transfer,
    forgetting,
    forgetting_matrix,
    per_task_forgetting,
)

# Forgetting case.  Rows = after stage i, columns = task j.
#          t0    t1    t2
# s0    [0.90, 0.10, 0.00]
# s1    [0.60, 0.95, 0.05]
# s2    [0.30, 0.70, 0.80]
# average accuracy = (0.30 + 0.70 + 0.80) / 3 = 0.60
# forgetting: f0 = max(0.90, 0.60) - 0.30 = 0.60 ; f1 = max(0.10, 0.95) - 0.70 = 0.25
#             mean = 0.425  (> 0: accuracy lost)
# bwt: (0.30 - 0.90) + (0.70 - 0.95) = -0.60 - 0.25 = -0.85 ; /2 = -0.425  (< 0)
R_FORGET = [
    [0.90, 0.10, 0.00],
    [0.60, 0.95, 0.05],
    [0.30, 0.70, 0.80],
]

# Positive backward transfer case.
#          t0    t1    t2
# s0    [0.50, 0.20, 0.10]
# s1    [0.70, 0.60, 0.20]
# s2    [0.80, 0.65, 0.90]
# average accuracy = (0.80 + 0.65 + 0.90) / 3 = 2.35 / 3
# forgetting: f0 = max(0.50, 0.70) - 0.80 = -0.10 ; f1 = max(0.20, 0.60) - 0.65 = -0.05
#             mean = -0.075 (nothing lost, tasks improved)
# bwt: (0.80 - 0.50) + (0.65 - 0.60) = 0.30 + 0.05 = 0.35 ; /2 = 0.175  (> 0)
R_BWT = [
    [0.50, 0.20, 0.10],
    [0.70, 0.60, 0.20],
    [0.80, 0.65, 0.90],
]


def test_forgetting_case_signs_and_values():
    assert average_accuracy(R_FORGET) == pytest.approx(0.60)
    np.testing.assert_allclose(per_task_forgetting(R_FORGET), [0.60, 0.25])
    assert forgetting(R_FORGET) == pytest.approx(0.425)
    assert backward_transfer(R_FORGET) == pytest.approx(-0.425)
    assert forgetting(R_FORGET) > 0
    assert backward_transfer(R_FORGET) < 0


def test_positive_backward_transfer_case():
    assert average_accuracy(R_BWT) == pytest.approx(2.35 / 3)
    np.testing.assert_allclose(per_task_forgetting(R_BWT), [-0.10, -0.05])
    assert forgetting(R_BWT) == pytest.approx(-0.075)
    assert backward_transfer(R_BWT) == pytest.approx(0.175)
    assert backward_transfer(R_BWT) > 0


def test_forgetting_uses_max_not_diagonal():
    # Task 0 peaks after stage 1 (0.9), not right after its own stage (0.5):
    # forgetting uses the max (0.9 - 0.4 = 0.5), bwt the diagonal (0.4 - 0.5 = -0.1).
    R = [
        [0.5, 0.0, 0.0],
        [0.9, 0.8, 0.0],
        [0.4, 0.8, 0.7],
    ]
    np.testing.assert_allclose(per_task_forgetting(R), [0.5, 0.0])
    assert forgetting(R) == pytest.approx(0.25)
    assert backward_transfer(R) == pytest.approx((-0.1 + 0.0) / 2)


def test_extra_columns_are_ignored():
    # A 4th column (classes never trained on) must not change any metric.
    R = np.hstack([np.asarray(R_FORGET), [[0.99], [0.0], [0.5]]])
    assert average_accuracy(R) == pytest.approx(0.60)
    assert forgetting(R) == pytest.approx(0.425)
    assert backward_transfer(R) == pytest.approx(-0.425)


def test_single_stage_is_nan():
    R = [[0.8, 0.1]]
    assert average_accuracy(R) == pytest.approx(0.8)
    assert math.isnan(forgetting(R))
    assert math.isnan(backward_transfer(R))
    assert per_task_forgetting(R).shape == (0,)


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        average_accuracy([0.1, 0.2])
    with pytest.raises(ValueError):
        forgetting([[0.1], [0.2]])  # T'=1 < T=2


def test_accuracy_matrix_from_confusions():
    # 5 classes; task 0 = {0, 1}, task 1 = {2, 3}; class 4 is in no task -> extra column.
    # Stage 0 confusion (rows true, cols predicted), 10 samples per class:
    cm0 = np.array([
        [9, 1, 0, 0, 0],   # class 0: 9 correct
        [2, 8, 0, 0, 0],   # class 1: 8 correct   -> task 0: 17/20 = 0.85
        [0, 5, 5, 0, 0],   # class 2: 5 correct
        [0, 0, 0, 0, 10],  # class 3: 0 correct   -> task 1:  5/20 = 0.25
        [0, 0, 0, 0, 10],  # class 4: 10 correct  -> rest:  10/10 = 1.00
    ])
    # Stage 1: class 1 has 5 samples only (totals differ per class).
    cm1 = np.array([
        [4, 0, 6, 0, 0],   # class 0: 4 correct of 10
        [0, 5, 0, 0, 0],   # class 1: 5 correct of 5 -> task 0: 9/15 = 0.6
        [0, 0, 10, 0, 0],  # class 2: 10 of 10
        [0, 0, 1, 9, 0],   # class 3: 9 of 10         -> task 1: 19/20 = 0.95
        [0, 0, 0, 3, 7],   # class 4: 7 of 10         -> rest: 0.7
    ])
    classes = [[0, 1], [2, 3]]
    R = accuracy_matrix_from_confusions([cm0, cm1], classes)
    np.testing.assert_allclose(R, [[0.85, 0.25, 1.0], [0.6, 0.95, 0.7]])
    assert classes == [[0, 1], [2, 3]]  # input not mutated


def test_accuracy_matrix_no_extra_column_when_all_classes_used():
    cm = np.array([[3, 1], [0, 4]])  # task {0}: 3/4, task {1}: 4/4
    R = accuracy_matrix_from_confusions([cm, cm], [[0], [1]])
    np.testing.assert_allclose(R, [[0.75, 1.0], [0.75, 1.0]])


def test_forgetting_counts_from_the_stage_that_trained_the_task():
    """A pretrained model can be better on a task before its own stage; that drop is not
    forgetting of what the stage learned (Chaudhry's max over *all* earlier rows would count it)."""
    R = [
        [0.90, 0.97, 0.5],  # after stage 1 (task 0); task 1 still at its pretrained 0.97
        [0.80, 0.92, 0.5],  # after stage 2 (task 1 trained: 0.92)
        [0.70, 0.90, 0.9],
    ]
    np.testing.assert_allclose(per_task_forgetting(R), [0.90 - 0.70, 0.92 - 0.90])
    F = forgetting_matrix(R)
    assert np.isnan(F[0]).all() and np.isnan(F[1, 1:]).all()  # undefined until trained and followed
    assert F[1, 0] == pytest.approx(0.10) and F[2, 0] == pytest.approx(0.20) and F[2, 1] == pytest.approx(0.02)


def test_forgetting_matrix_with_a_late_trained_task():
    R = [[0.9, 0.1], [0.5, 0.8], [0.4, 0.6]]
    F = forgetting_matrix(R, trained_at=[0, 1])
    assert F[2, 1] == pytest.approx(0.2) and F[2, 0] == pytest.approx(0.5)
    F = forgetting_matrix(R, trained_at=[0, -1])  # task 1 never trained: undefined throughout
    assert np.isnan(F[:, 1]).all()
