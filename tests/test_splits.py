"""``make_splits`` / ``stratified_quotas`` on tiny synthetic label vectors (checkable by hand)."""

from __future__ import annotations

import pytest
import torch

from seqft_lightning.data.splits import Splits, check_split_sizes, make_splits, stratified_quotas
from seqft_lightning.errors import DataError

# 6 zeros, 3 ones, 1 two, interleaved so that class order and index order differ.
LABELS = torch.tensor([0, 1, 0, 2, 0, 1, 0, 0, 1, 0])


def _all_indices(s: Splits) -> list[int]:
    return [*s.pretrain.tolist(), *s.calibration.tolist(), *(i for t in s.tasks.values() for i in t.tolist())]


@pytest.mark.parametrize(
    "counts, total, expected",
    [
        # exact 3, 1.5, 0.5 -> floors 3,1,0 (sum 4); the tie .5/.5 goes to the lower class index.
        ([6, 3, 1], 5, [3, 2, 0]),
        # exact 2, 1.2, 0.8 -> floors 2,1,0; the largest remainder (.8) gets the leftover unit.
        ([5, 3, 2], 4, [2, 1, 1]),
        # exact 1/3 each -> floors 0; two leftover units go to classes 0 and 1 (ties -> lower index).
        ([1, 1, 1], 2, [1, 1, 0]),
        # divides exactly: no rounding at all.
        ([10, 20, 30, 40], 10, [1, 2, 3, 4]),
        ([4, 4], 0, [0, 0]),
    ],
)
def test_stratified_quotas_largest_remainder(counts, total, expected):
    quotas = stratified_quotas(counts, total)
    assert quotas == expected
    assert sum(quotas) == total


def test_calibration_is_stratified_and_tasks_take_what_is_asked():
    s = make_splits(LABELS, task_classes=[1], samples_per_task=1, calibration_size=5, split_seed=0, num_classes=3)
    # calibration quotas [3, 2, 0] (see above); one remaining "1" is held out for the task.
    assert torch.bincount(LABELS[s.calibration], minlength=3).tolist() == [3, 2, 0]
    assert list(s.tasks) == [1]
    assert len(s.tasks[1]) == 1 and LABELS[s.tasks[1]].tolist() == [1]
    # pretraining pool: 3 zeros, no one left (3 - 2 - 1 = 0), the single two.
    assert torch.bincount(LABELS[s.pretrain], minlength=3).tolist() == [3, 0, 1]


def test_sets_are_disjoint_cover_everything_and_sorted():
    s = make_splits(LABELS, task_classes=[0, 2], samples_per_task=1, calibration_size=4, split_seed=3, num_classes=3)
    indices = _all_indices(s)
    assert sorted(indices) == list(range(len(LABELS)))  # disjoint (no repeats) and complete
    for t in [s.pretrain, s.calibration, *s.tasks.values()]:
        assert t.dtype == torch.int64
        assert t.tolist() == sorted(t.tolist())


def test_samples_per_task_none_takes_every_remaining_sample():
    s = make_splits(LABELS, task_classes=[0], samples_per_task=None, calibration_size=5, split_seed=0, num_classes=3)
    # 6 zeros - 3 in calibration = 3 held out; none left for pretraining.
    assert len(s.tasks[0]) == 3 and set(LABELS[s.tasks[0]].tolist()) == {0}
    assert 0 not in LABELS[s.pretrain].tolist()
    assert torch.bincount(LABELS[s.pretrain], minlength=3).tolist() == [0, 1, 1]


def test_samples_per_task_exactly_available_is_fine_one_more_is_refused():
    # class 0: 6 images, 3 go to calibration -> 3 left
    s = make_splits(LABELS, task_classes=[0], samples_per_task=3, calibration_size=5, split_seed=0, num_classes=3)
    assert len(s.tasks[0]) == 3
    with pytest.raises(DataError) as info:
        make_splits(LABELS, task_classes=[0], samples_per_task=4, calibration_size=5, split_seed=0, num_classes=3)
    message = str(info.value)
    assert "data.samples_per_task" in message
    assert "class 0" in message and "3" in message  # names the class and what is available
    assert "\n" not in message


@pytest.mark.parametrize("size", [-1, 10, 11])
def test_calibration_size_out_of_range_is_refused(size):
    with pytest.raises(DataError, match=r"data\.calibration_size"):
        make_splits(LABELS, task_classes=[1], samples_per_task=1, calibration_size=size, split_seed=0, num_classes=3)


def test_zero_calibration_gives_empty_calibration():
    s = make_splits(LABELS, task_classes=[2], samples_per_task=1, calibration_size=0, split_seed=0, num_classes=3)
    assert len(s.calibration) == 0
    assert len(s.pretrain) == 9 and LABELS[s.tasks[2]].tolist() == [2]


def test_deterministic_under_split_seed():
    labels = torch.arange(300) % 10
    kwargs = dict(task_classes=[3, 4], samples_per_task=5, calibration_size=50, num_classes=10)
    a = make_splits(labels, split_seed=7, **kwargs)
    b = make_splits(labels, split_seed=7, **kwargs)
    c = make_splits(labels, split_seed=8, **kwargs)
    assert torch.equal(a.pretrain, b.pretrain) and torch.equal(a.calibration, b.calibration)
    assert all(torch.equal(a.tasks[k], b.tasks[k]) for k in a.tasks)
    assert not torch.equal(a.calibration, c.calibration)
    assert not all(torch.equal(a.tasks[k], c.tasks[k]) for k in a.tasks)
    # ... but the sizes per class do not depend on the seed
    assert torch.equal(torch.bincount(labels[a.calibration]), torch.bincount(labels[c.calibration]))


def test_split_does_not_depend_on_global_rng():
    labels = torch.arange(100) % 10
    torch.manual_seed(0)
    a = make_splits(labels, [3], 2, 20, split_seed=1)
    torch.manual_seed(12345)
    b = make_splits(labels, [3], 2, 20, split_seed=1)
    assert torch.equal(a.calibration, b.calibration) and torch.equal(a.tasks[3], b.tasks[3])


@pytest.mark.parametrize("samples, calibration", [(3, 5), (4, 5), (1, 0), (2, 9), (5, 1)])
def test_size_check_from_counts_agrees_with_the_split(samples, calibration):
    """check_split_sizes (what plan_run checks from the label file) refuses exactly the splits
    make_splits cannot carve, and its quotas are the calibration split's class counts."""
    counts = torch.bincount(LABELS, minlength=3).tolist()
    try:
        s = make_splits(LABELS, task_classes=[0], samples_per_task=samples, calibration_size=calibration, split_seed=0, num_classes=3)
    except DataError as err:
        with pytest.raises(DataError) as info:
            check_split_sizes(counts, [0], samples, calibration)
        assert str(info.value) == str(err)
    else:
        quotas, estimation = check_split_sizes(counts, [0], samples, calibration)
        assert estimation == [0, 0, 0]
        assert quotas == torch.bincount(LABELS[s.calibration], minlength=3).tolist()
