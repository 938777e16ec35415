"""Pure functions over state dicts (``dict[str, Tensor]``).

Every function returns new tensors and never mutates its inputs. Results are detached from
autograd: merging is weight algebra, not something to backpropagate through.

Compatibility is always checked strictly (same key set, same shapes): a silent
``strict=False`` would merge a model with half of its weights missing.
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

StateDict = dict[str, Tensor]

# How many key names an error message lists before it only gives a count.
_MAX_KEYS_IN_MESSAGE = 5


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(repr(key) for key in keys[:_MAX_KEYS_IN_MESSAGE])
    more = len(keys) - _MAX_KEYS_IN_MESSAGE
    return f"[{shown}{f', ... {more} more' if more > 0 else ''}]"


def check_compatible(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have the same keys and the same shapes.

    ``what`` names the two sides for the message, e.g. ``"pretrained vs finetuned['mnist']"``.
    The message is one line and names the missing/extra keys (first side is the reference)
    or the first key, in ``a``'s order, whose shapes differ.
    """
    only_a = [key for key in a if key not in b]
    only_b = [key for key in b if key not in a]
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"{len(only_a)} key(s) missing from the second: {_key_list(only_a)}")
        if only_b:
            parts.append(f"{len(only_b)} extra key(s) in the second: {_key_list(only_b)}")
        raise ValueError(f"{what}: state dicts have different keys; " + "; ".join(parts))
    for key, tensor in a.items():
        if tensor.shape != b[key].shape:
            raise ValueError(
                f"{what}: shape mismatch at {key!r}: "
                f"{tuple(tensor.shape)} vs {tuple(b[key].shape)}"
            )


def float_entries(sd: Mapping[str, Tensor]) -> StateDict:
    """The floating-point entries of ``sd`` (same tensors, not copies), in ``sd``'s order.

    Integer/bool buffers (e.g. BatchNorm's ``num_batches_tracked``, step counters) are
    skipped: they are counters or indices, and adding or averaging them is meaningless.
    """
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
