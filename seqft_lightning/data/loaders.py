"""An in-memory batch loader: each batch is a slice of a per-epoch permutation (per-sample
``__getitem__`` plus ``collate`` would only add Python overhead per step). The tensors stay on their
device; ``randperm`` draws from the global RNG, so ``seed_everything`` makes the order reproducible.
Under DDP every rank draws the same permutation and keeps every ``world_size``-th index from its
rank on, like ``DistributedSampler``: together the ranks see one epoch of the data."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch
import torch.distributed as dist

from seqft_lightning.lockstep import RandomState


class TensorBatchLoader:
    """Iterable of ``(x, y)`` mini-batches over in-memory tensors ``x`` [N, ...] and ``y`` [N]."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle = shuffle

    @staticmethod
    def _rank_and_world() -> tuple[int, int]:
        if dist.is_available() and dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
        return 0, 1

    def __len__(self) -> int:
        rank, world = self._rank_and_world()
        return math.ceil(len(range(rank, len(self.x), world)) / self.batch_size)  # this rank's shard, last batch short

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

    def batch_key(self) -> tuple:
        """What fixes the batch shapes: loaders with equal keys yield batches that stack."""
        return ("tensor", len(self.x), tuple(self.x.shape[1:]), str(self.x.dtype), self.batch_size, self.shuffle)


class StackedLoader:
    """The batches of K loaders with equal :meth:`batch_key`, stacked: ``(x [K, B, ...], y [K, B])``.
    Loader ``k`` draws its batches with its own random generators ``randoms[k]`` (None: the process's).
    When no loader shuffles (the evaluation loaders), the stacked batches of the first pass are kept
    and served again: validation after every epoch copies its data once per fit, not once per epoch."""

    def __init__(self, loaders: Sequence, randoms: Sequence[RandomState | None] | None = None):
        self.loaders = list(loaders)
        self.randoms = list(randoms) if randoms is not None else [None] * len(self.loaders)
        self._fixed = all(getattr(loader, "shuffle", True) is False for loader in self.loaders)
        self._kept: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.loaders[0])

    def _next(self, k: int, iterator: Iterator) -> tuple[torch.Tensor, torch.Tensor]:
        random = self.randoms[k]
        if random is None:
            return next(iterator)
        random.restore(torch_only=True)
        try:
            return next(iterator)
        finally:
            random.capture(torch_only=True)

    def _stacked(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        iterators = [iter(loader) for loader in self.loaders]
        while True:
            try:
                batches = [self._next(k, it) for k, it in enumerate(iterators)]
            except StopIteration:
                return
            yield torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._fixed and self._kept is None:  # a whole pass up front: Lightning may stop at len() without exhausting it
            self._kept = list(self._stacked())
        return iter(self._kept) if self._fixed else self._stacked()
