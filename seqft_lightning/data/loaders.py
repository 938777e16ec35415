"""An in-memory batch loader: each batch is a slice of a per-epoch permutation.

MNIST fits in memory many times over, so per-sample ``__getitem__`` plus ``collate`` (the default
``DataLoader`` path) only adds Python overhead per step. The tensors stay on their device (the
GPU when training there), and ``randperm`` draws from the global RNG, so ``seed_everything``
makes the order reproducible.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch


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

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        if self.shuffle:
            order = torch.randperm(n, device=self.x.device)
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]
        else:
            # Contiguous slices are views: no copy at all for evaluation.
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
