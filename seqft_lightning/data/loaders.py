"""An in-memory batch loader: each batch is a slice of a per-epoch permutation.

MNIST fits in memory many times over, so per-sample ``__getitem__`` plus ``collate`` (the default
``DataLoader`` path) only adds Python overhead per step. The tensors stay on their device (the
GPU when training there), and ``randperm`` draws from the global RNG, so ``seed_everything``
makes the order reproducible.

Under DDP (``trainer=ddp``) every rank draws the same permutation (same seed) and keeps every
``world_size``-th index from its rank on, like ``DistributedSampler``: the ranks see disjoint
shards and together one epoch of the data.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.distributed as dist


class TensorBatchLoader:
    """Iterable of ``(x, y)`` mini-batches over in-memory tensors ``x`` [N, ...] and ``y`` [N]."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last

    @staticmethod
    def _rank_and_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def _shard_size(self) -> int:
        rank, world = self._rank_and_world()
        return len(range(rank, len(self.x), world))

    def __len__(self) -> int:
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = self._rank_and_world()
        stop = len(self) * self.batch_size
        if self.shuffle:
            order = torch.randperm(len(self.x), device=self.x.device)[rank::world]
            for start in range(0, stop, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]
        else:
            x, y = self.x[rank::world], self.y[rank::world]  # basic slices are views: no copy for evaluation
            for start in range(0, stop, self.batch_size):
                yield x[start : start + self.batch_size], y[start : start + self.batch_size]
