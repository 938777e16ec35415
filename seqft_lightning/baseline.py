"""The pretrained baseline: trained once per (split, model, pretraining config, seed), then reused.
Writers hold a file lock, so parallel jobs that need the same baseline train it once; the checkpoint
is written atomically, and one that fails to load (truncated, corrupt, wrong keys) is retrained."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf

from seqft_lightning.config import stable_hash
from seqft_lightning.contract import result_config
from seqft_lightning.io import atomic_torch_save
from seqft_lightning.lockstep import pause

log = logging.getLogger(__name__)


def baseline_key(cfg: DictConfig, task_classes: list[int], device: torch.device, threads: int, code_version: str) -> str:
    """Hash of everything that determines the pretrained weights' bits: the config's result-relevant data
    split, model, pretraining, trainer (its ``accelerator`` string aside), seed and CPU kernel choice, the
    held-out task classes, the training code, and what the config does not pin: the device type and, on
    CPU, the intra-op thread count and kernel path in force (float sums, hence the bits, depend on them)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    parts = result_config({k: resolved.get(k) for k in ("data", "model", "pretrain", "trainer", "seed", "cpu_kernels")})
    parts["trainer"] = {k: v for k, v in (parts.get("trainer") or {}).items() if k != "accelerator"}
    cpu = device.type == "cpu"
    machine = {"device": device.type, "cpu_threads": int(threads) if cpu else None,
               "cpu_capability": torch.backends.cpu.get_cpu_capability() if cpu else None}
    return stable_hash({"task_classes": task_classes, **parts, **machine, "code_version": code_version})


@contextlib.contextmanager
def _held(lock: FileLock) -> Iterator[None]:
    """Hold ``lock``. Inside a :class:`~seqft_lightning.lockstep.Lockstep`, wait by letting the other
    jobs run (the holder may be one of them, parked until they park too); elsewhere, simply block."""
    while True:
        try:
            lock.acquire(timeout=0)
            break
        except Timeout:
            if not pause():
                lock.acquire()
                break
    try:
        yield
    finally:
        lock.release()


class BaselineCache:
    """Checkpoints of pretrained baselines in ``cache_dir``, keyed by :func:`baseline_key`: the net's
    ``state_dict``, its pretraining curve rows (``history``) and ``steps``, so a hit reproduces a miss."""

    def __init__(self, cache_dir: str | Path, enabled: bool = True):
        self.cache_dir = Path(cache_dir)
        self.enabled = enabled

    def path(self, key: str) -> Path:
        return self.cache_dir / f"baseline-{key}.pt"

    def _load(self, path: Path, net: torch.nn.Module) -> dict | None:
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            # Check on a copy first: a failed strict load may already have copied some tensors.
            copy.deepcopy(net).load_state_dict(entry["state_dict"], strict=True)
            net.load_state_dict(entry["state_dict"], strict=True)
            return entry
        except Exception as err:  # a truncated or foreign file must be retrained, never trusted
            log.warning("cached baseline %s is unreadable (%s); retraining it", path, str(err).splitlines()[0])
            return None

    def get_or_train(self, key: str, net: torch.nn.Module, train: Callable[[], dict[str, Any]]) -> dict:
        """Load the baseline ``key`` into ``net``, or run ``train()`` (which trains ``net`` in place and
        returns ``{"history": [...], "steps": int}``) and cache it; return the entry, ``cached`` telling a hit."""
        if not self.enabled:
            return {**train(), "cached": False}
        path = self.path(key)
        # Under DDP, ranks > 0 are started by rank 0 while it holds the lock and trains: they must
        # train with it, not wait for it (their atomic save writes the same weights).
        # Lock files live apart (`.locks/`), so the cache folder lists only baselines.
        lock_path = self.cache_dir / ".locks" / f"{path.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        ddp_child = int(os.environ.get("LOCAL_RANK", "0")) > 0 or int(os.environ.get("NODE_RANK", "0")) > 0
        with contextlib.nullcontext() if ddp_child else _held(FileLock(str(lock_path))):
            if (entry := self._load(path, net)) is not None:
                log.info("baseline cache hit: %s", path)
                return {"history": entry["history"], "steps": entry["steps"], "cached": True}
            log.info("baseline cache miss (no baseline of this split, model, pretraining, seed, device and code "
                     "version): pretraining into %s", path)
            result = train()
            state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
            atomic_torch_save(path, {"state_dict": state, "history": result["history"], "steps": int(result["steps"]), "key": key})
            return {**result, "cached": False}
