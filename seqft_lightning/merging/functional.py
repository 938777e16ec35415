"""The tensor work behind the mergers (:mod:`.mergers`): task vectors (``tau = theta_ft - theta_0``),
TIES, DARE, weight averaging. Pure functions: they never mutate their inputs."""

from __future__ import annotations

import functools
import logging
from typing import Iterator, Mapping

import torch
from torch import Tensor, nn

from seqft_lightning.merging import state_dict_ops as ops
from seqft_lightning.merging.task_vector import TaskVector, load_copy

log = logging.getLogger(__name__)


def _checked_state_dicts(base_sd: Mapping[str, Tensor], finetuned: Mapping[str, nn.Module]) -> Iterator[tuple]:
    """``(name, state dict)`` of each fine-tuned model, checked against ``base_sd``."""
    if not finetuned:
        raise ValueError("merging: `finetuned` is empty; pass at least one fine-tuned model")
    for name, model in finetuned.items():
        ft_sd = model.state_dict()
        ops.check_compatible(base_sd, ft_sd, f"base vs finetuned[{name!r}]")
        yield name, ft_sd


def task_vectors(base: nn.Module, finetuned: Mapping[str, nn.Module]) -> dict[str, TaskVector]:
    """``{name: theta(finetuned[name]) - theta(base)}``, in ``finetuned``'s order."""
    base_sd = base.state_dict()
    return {name: TaskVector.from_state_dicts(base_sd, sd) for name, sd in _checked_state_dicts(base_sd, finetuned)}


def ties_merge(vectors: list[TaskVector], keep_fraction: float) -> TaskVector:
    """TIES-merging (Yadav et al., NeurIPS 2023) without the lambda step: ``tau_merged``, the merged
    model being ``theta_0 + lambda * tau_merged``.

    1. Trim: each vector keeps its ``round(keep_fraction * n)`` (at least 1) largest-magnitude
       entries, ``n`` counting ALL its entries (one global threshold per vector, as the reference
       implementation); entries tied with the threshold are kept.
    2. Elect sign: per entry, the sign of the SUM of the trimmed vectors (mass, not a vote); where
       it is exactly 0 the merged entry is 0 (the reference code takes the global majority sign).
    3. Disjoint mean: per entry, the mean of the trimmed values of the elected sign (zeros and
       disagreeing values do not count in the denominator)."""
    if not vectors:
        raise ValueError("ties_merge: no task vectors given")
    if not 0.0 < keep_fraction <= 1.0:
        raise ValueError(f"ties_merge: keep_fraction must be in (0, 1], got {keep_fraction!r}")
    reference = vectors[0]._deltas
    for index, tv in enumerate(vectors[1:], start=1):
        ops.check_compatible(reference, tv._deltas, f"ties_merge: vector 0 vs vector {index}")
    trimmed = [_trim_global(tv._deltas, keep_fraction) for tv in vectors]
    merged: dict[str, Tensor] = {}
    for key in reference:
        stacked = torch.stack([t[key] for t in trimmed])  # (tasks, *shape)
        elected = torch.sign(stacked.sum(dim=0))
        # Zeros never count in the denominator (where elected is 0 they would match sign 0).
        agree = (torch.sign(stacked) == elected) & (stacked != 0)
        count = agree.sum(dim=0).clamp(min=1).to(stacked.dtype)
        merged[key] = (stacked * agree).sum(dim=0) / count
    return TaskVector._wrap(merged)


def _trim_global(deltas: Mapping[str, Tensor], keep_fraction: float) -> dict[str, Tensor]:
    """Zero all but the ``round(keep_fraction * n)`` largest-magnitude entries over all tensors."""
    # float32 at least: kthvalue is not implemented for half types on every device.
    dtype = functools.reduce(torch.promote_types, (tensor.dtype for tensor in deltas.values()), torch.float32)
    flat = torch.cat([tensor.abs().flatten().to(dtype) for tensor in deltas.values()])
    total = flat.numel()
    if total == 0:
        return {key: tensor.clone() for key, tensor in deltas.items()}
    n_keep = min(total, max(1, round(keep_fraction * total)))
    # The n_keep-th largest magnitude is the (total - n_keep + 1)-th smallest.
    threshold = torch.kthvalue(flat, total - n_keep + 1).values
    log.debug("TIES trim: keeping %d of %d entries (|tau| >= %g)", n_keep, total, threshold.item())
    return {key: torch.where(tensor.abs().to(dtype) >= threshold, tensor, torch.zeros_like(tensor))
            for key, tensor in deltas.items()}


def dare_sparsify(tv: TaskVector, drop_rate: float, generator: torch.Generator) -> TaskVector:
    """DARE (Yu et al., ICML 2024): drop each entry with probability ``drop_rate`` and multiply the
    survivors by ``1 / (1 - drop_rate)`` (same expected value). Masks are drawn on the CPU from
    ``generator`` (device-independent; never the global RNG); ``drop_rate == 0`` draws nothing."""
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"dare_sparsify: drop_rate must be in [0, 1), got {drop_rate!r}")
    if drop_rate == 0.0:
        return TaskVector._wrap(tv.state_dict())
    keep_scale = 1.0 / (1.0 - drop_rate)
    sparse = {}
    for key, tensor in tv._deltas.items():
        keep = torch.rand(tensor.shape, generator=generator) >= drop_rate
        sparse[key] = torch.where(keep.to(tensor.device), tensor * keep_scale, torch.zeros_like(tensor))
    return TaskVector._wrap(sparse)


def average_models(base: nn.Module, finetuned: Mapping[str, nn.Module]) -> nn.Module:
    """The element-wise mean of the fine-tuned models' float entries (integer buffers from
    ``base``); a new model. See :class:`~seqft_lightning.merging.mergers.Average`."""
    base_sd = base.state_dict()
    base_float = ops.float_entries(base_sd)
    total: dict[str, Tensor] | None = None
    for name, ft_sd in _checked_state_dicts(base_sd, finetuned):
        ft_float = ops.float_entries(ft_sd)
        ops.check_compatible(base_float, ft_float, f"base vs finetuned[{name!r}] (floating-point entries)")
        total = ops.scale(ft_float, 1.0) if total is None else ops.add(total, ft_float)
    return load_copy(base, {**base_sd, **{key: tensor / len(finetuned) for key, tensor in total.items()}})
