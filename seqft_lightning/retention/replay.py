"""Experience replay from a small class-balanced memory.

Memory
    ``memory_per_class`` samples per class (uniformly at random, without
    replacement, drawn with the strategy's own ``torch.Generator(seed)`` so the
    memory does not depend on, nor disturb, the global RNG):

    * from the pretraining pool in ``on_finetune_start`` (if ``include_pretrain``),
      every class of the pool;
    * from each finished stage's task data in ``on_stage_end``: the stage's classes
      are then held by task samples only (drawn from the samples that stage
      trained on), replacing any pool samples of those classes, so later stages
      rehearse what the earlier stages learned.

    So the memory stays class-balanced (at most ``memory_per_class`` per class);
    :meth:`Replay.memory_sources` says where each class's samples come from.
    Memory tensors stay on the device of the data they were taken from.

Batches (design choice)
    The task batch is kept as is and ``k`` memory samples are appended to it, with
    ``k = round(b * replay_share / (1 - replay_share))`` for a task batch of ``b``
    samples.  ``replay_share`` is therefore the fraction of each training batch
    that comes from memory: ``k / (b + k) ≈ replay_share`` (exact when the
    rounding is exact, e.g. share 0.5 → ``k = b`` and batches twice as large).
    The wrapped loader has the same number of batches as the task loader, so an
    epoch still means one pass over the task data.  Memory samples are drawn
    uniformly with replacement from the whole memory using the global RNG, so
    seeded runs are deterministic.  With an empty memory or ``replay_share == 0``
    task batches are yielded unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention

log = logging.getLogger(__name__)

__all__ = ["Replay", "ReplayLoader", "replay_count"]


def replay_count(task_batch_size: int, replay_share: float) -> int:
    """Number of memory samples appended to a task batch of ``task_batch_size``.

    Chosen so that ``k / (task_batch_size + k) ≈ replay_share``.
    """
    if not 0.0 <= replay_share < 1.0:
        raise ValueError(f"replay_share must be in [0, 1), got {replay_share}")
    return int(round(task_batch_size * replay_share / (1.0 - replay_share)))


class ReplayLoader:
    """Iterates a task loader and appends replayed memory samples to each batch."""

    def __init__(self, task_loader: Any, mem_x: Tensor, mem_y: Tensor, replay_share: float) -> None:
        self.task_loader = task_loader
        self.mem_x = mem_x
        self.mem_y = mem_y
        self.replay_share = float(replay_share)

    @property
    def memory_size(self) -> int:
        return int(self.mem_y.numel())

    def _k(self, task_batch_size: int) -> int:
        if self.memory_size == 0:
            return 0
        return replay_count(task_batch_size, self.replay_share)

    def __len__(self) -> int:
        return len(self.task_loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in self.task_loader:
            k = self._k(int(yb.shape[0]))
            if k == 0:
                yield xb, yb
                continue
            if self.mem_x.device != xb.device:
                # Move once and keep: the training device does not change mid-run.
                self.mem_x, self.mem_y = self.mem_x.to(xb.device), self.mem_y.to(xb.device)
            idx = torch.randint(self.memory_size, (k,), device=xb.device)
            yield torch.cat([xb, self.mem_x[idx]]), torch.cat([yb, self.mem_y[idx]])


class Replay(Retention):
    """Rehearsal of stored samples of the pretraining pool and earlier stages.

    Args:
        memory_per_class: samples kept per class (>= 0).
        replay_share: fraction of every training batch taken from memory, in [0, 1).
        seed: seed of the generator that selects the memory samples.
        include_pretrain: also store samples of the pretraining pool.
    """

    name = "replay"

    def __init__(
        self,
        memory_per_class: int = 100,
        replay_share: float = 0.5,
        seed: int = 0,
        include_pretrain: bool = True,
    ) -> None:
        if memory_per_class < 0:
            raise ValueError(f"memory_per_class must be >= 0, got {memory_per_class}")
        replay_count(1, replay_share)  # validates the range
        self.memory_per_class = int(memory_per_class)
        self.replay_share = float(replay_share)
        self.seed = int(seed)
        self.include_pretrain = bool(include_pretrain)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._memory: dict[int, Tensor] = {}  # class -> x samples [n_c, D]
        self._sources: dict[int, str] = {}  # class -> "pretrain" | "stage <k>"

    def settings(self) -> dict[str, Any]:
        return {
            "memory_per_class": self.memory_per_class,
            "replay_share": self.replay_share,
            "seed": self.seed,
            "include_pretrain": self.include_pretrain,
        }

    def extra_memory_bytes(self) -> int:
        return tensor_bytes(list(self._memory.values()))

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        if self.memory_per_class == 0 or self.replay_share == 0.0:
            return "memory_per_class=0 or replay_share=0: nothing is replayed"
        if num_stages == 1 and not (self.include_pretrain and has_pool):
            return "one training stage and no pretraining pool in memory: the memory stays empty"
        return super().inactive_reason(has_pool, num_stages)

    # ----------------------------------------------------------------- memory
    def memory(self) -> tuple[Tensor, Tensor]:
        """All stored samples ``(x [N, D], y [N])``, classes in ascending order."""
        if not self._memory:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        classes = sorted(self._memory)
        xs = [self._memory[c] for c in classes]
        ys = [torch.full((len(x),), c, dtype=torch.long, device=x.device) for c, x in zip(classes, xs)]
        return torch.cat(xs), torch.cat(ys)

    def memory_counts(self) -> dict[int, int]:
        """Stored samples per class."""
        return {c: len(x) for c, x in sorted(self._memory.items())}

    def memory_sources(self) -> dict[int, str]:
        """Where each class's samples come from: ``"pretrain"`` or ``"stage <k>"`` (task data)."""
        return dict(sorted(self._sources.items()))

    def _store(self, x: Tensor, y: Tensor, source: str) -> None:
        """Hold ``memory_per_class`` samples of every class in ``y``, drawn from ``x``
        (replacing what the class held before)."""
        for c in sorted(int(v) for v in torch.unique(y).tolist()):
            idx = torch.nonzero(y == c, as_tuple=False).flatten()
            pick = torch.randperm(len(idx), generator=self._gen)[: self.memory_per_class].to(idx.device)
            if len(pick) == 0:
                continue
            self._memory[c] = x[idx[pick]].detach().clone()
            self._sources[c] = source

    # ------------------------------------------------------------------ hooks
    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        # Reset so that repeated calls give the same memory.
        self._gen = torch.Generator().manual_seed(self.seed)
        self._memory, self._sources = {}, {}
        x = getattr(datamodule, "pretrain_x", None)
        y = getattr(datamodule, "pretrain_y", None)
        if self.include_pretrain and x is not None and y is not None and len(y) > 0:
            self._store(x, y, "pretrain")
        log.info("replay memory after pretraining pool: %s", self.memory_counts())

    def wrap_train_loader(self, loader: Any, stage: int, classes: Sequence[int]) -> Any:
        mem_x, mem_y = self.memory()
        if mem_y.numel() == 0 or self.replay_share == 0.0:
            return loader
        return ReplayLoader(loader, mem_x, mem_y, self.replay_share)

    def on_stage_end(
        self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any
    ) -> None:
        x, y = datamodule.task_data(list(classes))
        self._store(x, y, f"stage {stage}")
        log.info("replay memory after stage %d: %s", stage, self.memory_counts())
