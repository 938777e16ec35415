"""What replay stores, on the real split: the pretraining pool first, then each finished stage's
own task samples for that stage's classes (issue: the memory used to keep pool samples only)."""

from __future__ import annotations

import torch

from seqft_lightning.retention import Replay


def _rows_in(x: torch.Tensor, pool: torch.Tensor) -> bool:
    """Every row of ``x`` is a row of ``pool`` (exact match)."""
    return all(bool((pool == row).all(1).any()) for row in x)


def test_memory_composition_on_the_real_split(mnist_dm):
    replay = Replay(memory_per_class=20, replay_share=0.5, seed=0)
    replay.on_finetune_start(None, mnist_dm)
    assert replay.memory_counts() == {c: 20 for c in range(10)}
    assert set(replay.memory_sources().values()) == {"pretrain"}

    replay.on_stage_end(None, 1, [3], mnist_dm)
    x, y = replay.memory()
    task3_x, _ = mnist_dm.task_data([3])
    assert replay.memory_counts() == {c: 20 for c in range(10)}  # still class-balanced
    assert replay.memory_sources()[3] == "stage 1"
    assert _rows_in(x[y == 3], task3_x)  # class 3 is now held by the samples stage 1 trained on
    assert not _rows_in(x[y == 3], mnist_dm.pretrain_x[mnist_dm.pretrain_y == 3])
    assert _rows_in(x[y == 4], mnist_dm.pretrain_x[mnist_dm.pretrain_y == 4])  # not trained yet

    replay.on_stage_end(None, 2, [4], mnist_dm)
    x, y = replay.memory()
    assert replay.memory_sources() == {**{c: "pretrain" for c in range(10)}, 3: "stage 1", 4: "stage 2"}
    assert _rows_in(x[y == 4], mnist_dm.task_data([4])[0])


def test_the_loader_of_the_next_stage_replays_earlier_task_samples(mnist_dm):
    replay = Replay(memory_per_class=10, replay_share=0.5, seed=0, include_pretrain=False)
    replay.on_finetune_start(None, mnist_dm)
    assert replay.memory_counts() == {}
    replay.on_stage_end(None, 1, [3], mnist_dm)
    loader = replay.wrap_train_loader(mnist_dm.task_dataloader([4], batch_size=8), 2, [4])
    xb, yb = next(iter(loader))
    assert len(yb) == 16 and (yb[8:] == 3).all()  # half of every batch: stage 1's class-3 samples
    assert _rows_in(xb[8:], mnist_dm.task_data([3])[0])
