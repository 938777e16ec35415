"""Experience replay from a small class-balanced memory of ``memory_per_class`` samples per class,
drawn without replacement with the strategy's own ``torch.Generator(seed)``: from the pretraining
pool at ``on_finetune_start`` (if ``include_pretrain``) and from each finished stage's task data,
replacing what its classes held (:meth:`Replay.memory_sources`). A task batch of ``b`` samples gets
``k = round(b * replay_share / (1 - replay_share))`` memory samples appended (uniform, with
replacement, global RNG), so ``replay_share ≈ k / (b + k)``; an epoch is still one pass over the task
data. With an empty memory or ``replay_share == 0`` task batches pass unchanged."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention, pretrain_pool

log = logging.getLogger(__name__)


def replay_count(task_batch_size: int, replay_share: float) -> int:
    """Number ``k`` of memory samples appended to a task batch, so that ``k / (size + k) ≈ share``."""
    if not 0.0 <= replay_share < 1.0:
        raise ValueError(f"replay_share must be in [0, 1), got {replay_share}")
    return int(round(task_batch_size * replay_share / (1.0 - replay_share)))


@dataclass
class ReplayLoader:
    """Iterates a task loader and appends replayed memory samples (non-empty) to each batch."""

    task_loader: Any
    mem_x: Tensor
    mem_y: Tensor
    replay_share: float

    def __len__(self) -> int:
        return len(self.task_loader)

    def batch_key(self) -> tuple | None:
        """Loaders with equal keys yield batches of equal shapes (see ``TensorBatchLoader.batch_key``)."""
        task = getattr(self.task_loader, "batch_key", None)
        return None if task is None else ("replay", task(), self.replay_share, tuple(self.mem_x.shape[1:]))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for xb, yb in self.task_loader:
            k = replay_count(int(yb.shape[0]), self.replay_share)
            if k == 0:
                yield xb, yb
                continue
            if self.mem_x.device != xb.device:
                # Move once and keep: the training device does not change mid-run.
                self.mem_x, self.mem_y = self.mem_x.to(xb.device), self.mem_y.to(xb.device)
            idx = torch.randint(int(self.mem_y.numel()), (k,), device=xb.device)
            yield torch.cat([xb, self.mem_x[idx]]), torch.cat([yb, self.mem_y[idx]])


class Replay(Retention):
    """Rehearsal of ``memory_per_class`` (>= 0) stored samples per class of earlier stages and (if
    ``include_pretrain``) of the pretraining pool, selected with ``seed``; they make up the share
    ``replay_share`` (in [0, 1)) of every training batch."""

    name = "replay"

    def __init__(self, memory_per_class: int = 100, replay_share: float = 0.5, seed: int = 0,
                 include_pretrain: bool = True) -> None:
        if memory_per_class < 0:
            raise ValueError(f"memory_per_class must be >= 0, got {memory_per_class}")
        replay_count(1, replay_share)  # validates the range
        self.memory_per_class, self.replay_share = int(memory_per_class), float(replay_share)
        self.seed, self.include_pretrain = int(seed), bool(include_pretrain)
        self._gen = torch.Generator().manual_seed(self.seed)
        self._memory: dict[int, Tensor] = {}  # class -> x samples [n_c, D]
        self._sources: dict[int, str] = {}  # class -> "pretrain" | "stage <k>"

    def extra_memory_bytes(self) -> int:
        return tensor_bytes(list(self._memory.values()))

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        if self.memory_per_class == 0 or self.replay_share == 0.0:
            return "memory_per_class=0 or replay_share=0: nothing is replayed"
        if num_stages == 1 and not (self.include_pretrain and has_pool):
            return "one training stage and no pretraining pool in memory: the memory stays empty"
        return super().inactive_reason(has_pool, num_stages)

    def memory(self) -> tuple[Tensor, Tensor]:
        """All stored samples ``(x [N, D], y [N])``, classes in ascending order."""
        if not self._memory:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        items = sorted(self._memory.items())
        ys = [torch.full((len(x),), c, dtype=torch.long, device=x.device) for c, x in items]
        return torch.cat([x for _, x in items]), torch.cat(ys)

    def memory_counts(self) -> dict[int, int]:
        return {c: len(x) for c, x in sorted(self._memory.items())}

    def memory_sources(self) -> dict[int, str]:
        """Where each class's samples come from: ``"pretrain"`` or ``"stage <k>"`` (task data)."""
        return dict(sorted(self._sources.items()))

    def _store(self, x: Tensor, y: Tensor, source: str) -> None:
        """Hold ``memory_per_class`` samples of each class in ``y``, drawn from ``x``, replacing what it held."""
        for c in sorted(int(v) for v in torch.unique(y).tolist()):
            idx = torch.nonzero(y == c, as_tuple=False).flatten()
            pick = torch.randperm(len(idx), generator=self._gen)[: self.memory_per_class].to(idx.device)
            if len(pick) > 0:
                self._memory[c] = x[idx[pick]].detach().clone()
                self._sources[c] = source

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        # Reset so that repeated calls give the same memory.
        self._gen = torch.Generator().manual_seed(self.seed)
        self._memory, self._sources = {}, {}
        if self.include_pretrain and (pool := pretrain_pool(datamodule)) is not None:
            self._store(*pool, "pretrain")
        log.info("replay memory after pretraining pool: %s", self.memory_counts())

    def wrap_train_loader(self, loader: Any, stage: int, classes: Sequence[int]) -> Any:
        mem_x, mem_y = self.memory()
        if mem_y.numel() == 0 or self.replay_share == 0.0:
            return loader
        return ReplayLoader(loader, mem_x, mem_y, self.replay_share)

    def on_stage_end(self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any) -> None:
        self._store(*datamodule.task_data(list(classes)), f"stage {stage}")
        log.info("replay memory after stage %d: %s", stage, self.memory_counts())
