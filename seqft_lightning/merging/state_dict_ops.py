"""Pure functions over state dicts (``dict[str, Tensor]``): they return new tensors, detached from
autograd (merging is weight algebra), and check compatibility strictly (same keys, same shapes): a
silent ``strict=False`` would merge a model with half of its weights missing."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

StateDict = dict[str, Tensor]


def _key_list(keys: list[str], shown: int = 5) -> str:
    more = f", ... {len(keys) - shown} more" if len(keys) > shown else ""
    return f"[{', '.join(repr(key) for key in keys[:shown])}{more}]"


def check_compatible(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    """Raise a one-line ``ValueError``, naming the sides (``what``) and the missing/extra keys (``a``
    is the reference) or the first key whose shapes differ, unless ``a`` and ``b`` match."""
    only_a = [key for key in a if key not in b]
    only_b = [key for key in b if key not in a]
    if only_a or only_b:
        parts = [f"{len(only_a)} key(s) missing from the second: {_key_list(only_a)}"] if only_a else []
        parts += [f"{len(only_b)} extra key(s) in the second: {_key_list(only_b)}"] if only_b else []
        raise ValueError(f"{what}: state dicts have different keys; " + "; ".join(parts))
    for key, tensor in a.items():
        if tensor.shape != b[key].shape:
            raise ValueError(f"{what}: shape mismatch at {key!r}: {tuple(tensor.shape)} vs {tuple(b[key].shape)}")


def float_entries(sd: Mapping[str, Tensor]) -> StateDict:
    """The floating-point entries of ``sd`` (same tensors), in order: adding or averaging integer
    buffers (counters such as ``num_batches_tracked``) is meaningless."""
    return {key: tensor for key, tensor in sd.items() if torch.is_floating_point(tensor)}


def sub(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> StateDict:
    """``a - b`` per key (keys and shapes must match); ``b`` is moved to ``a``'s device."""
    check_compatible(a, b, "sub: first vs second")
    return {key: a[key].detach() - b[key].detach().to(a[key].device) for key in a}


def add(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> StateDict:
    """``a + b`` per key (keys and shapes must match); ``b`` is moved to ``a``'s device."""
    check_compatible(a, b, "add: first vs second")
    return {key: a[key].detach() + b[key].detach().to(a[key].device) for key in a}


def scale(a: Mapping[str, Tensor], s: float) -> StateDict:
    """``s * a`` per key (``s`` is a plain, dimensionless number)."""
    return {key: tensor.detach() * s for key, tensor in a.items()}
