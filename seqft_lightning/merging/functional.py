"""The tensor work behind the mergers (:mod:`seqft_lightning.merging.mergers`): task vectors,
TIES trimming and sign election, DARE sparsification, weight averaging. Pure functions: they never
mutate their inputs. Task vectors follow ``tau = theta_ft - theta_0``.
"""

from __future__ import annotations

import copy
import logging
from typing import Mapping

import torch
from torch import Tensor, nn

from seqft_lightning.merging import state_dict_ops as ops
from seqft_lightning.merging.task_vector import TaskVector

log = logging.getLogger(__name__)


def _check_finetuned(finetuned: Mapping[str, nn.Module]) -> None:
    if not finetuned:
        raise ValueError("merging: `finetuned` is empty; pass at least one fine-tuned model")


def task_vectors(base: nn.Module, finetuned: Mapping[str, nn.Module]) -> dict[str, TaskVector]:
    """``{name: theta(finetuned[name]) - theta(base)}``, in ``finetuned``'s order."""
    _check_finetuned(finetuned)
    base_sd = base.state_dict()
    vectors = {}
    for name, model in finetuned.items():
        ft_sd = model.state_dict()
        ops.check_compatible(base_sd, ft_sd, f"base vs finetuned[{name!r}]")
        vectors[name] = TaskVector.from_state_dicts(base_sd, ft_sd)
    return vectors


def ties_merge(vectors: list[TaskVector], keep_fraction: float) -> TaskVector:
    """TIES-merging of task vectors (Yadav et al., NeurIPS 2023), without the lambda step.

    1. Trim: each vector keeps its ``round(keep_fraction * n)`` entries of largest magnitude
       (at least 1), where ``n`` is the vector's total entry count over ALL parameters
       (one global threshold per task vector, as in the paper's reference implementation,
       not one per tensor). Entries tied with the threshold magnitude are all kept.
    2. Elect sign: per entry, the sign of the SUM of the trimmed vectors (total mass, not a
       majority vote of signs). Where that sum is exactly 0 no sign is elected and the
       merged entry is 0 (the reference code falls back to the global majority sign there).
    3. Disjoint mean: per entry, the mean of the trimmed values whose sign equals the
       elected sign; zeros and disagreeing values do not count in the denominator.

    Returns ``tau_merged``; the merged model is ``theta_0 + lambda * tau_merged``.
    """
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
    dtype = torch.float32
    for tensor in deltas.values():
        dtype = torch.promote_types(dtype, tensor.dtype)
    flat = torch.cat([tensor.abs().flatten().to(dtype) for tensor in deltas.values()])
    total = flat.numel()
    if total == 0:
        return {key: tensor.clone() for key, tensor in deltas.items()}
    n_keep = min(total, max(1, round(keep_fraction * total)))
    # The n_keep-th largest magnitude is the (total - n_keep + 1)-th smallest.
    threshold = torch.kthvalue(flat, total - n_keep + 1).values
    log.debug("TIES trim: keeping %d of %d entries (|tau| >= %g)", n_keep, total, threshold.item())
    return {
        key: torch.where(tensor.abs().to(dtype) >= threshold, tensor, torch.zeros_like(tensor))
        for key, tensor in deltas.items()
    }


def dare_sparsify(tv: TaskVector, drop_rate: float, generator: torch.Generator) -> TaskVector:
    """DARE (Yu et al., ICML 2024): drop each entry with probability ``drop_rate``, rescale.

    Survivors are multiplied by ``1 / (1 - drop_rate)`` so each entry keeps its expected
    value. Random numbers come from ``generator`` (a CPU generator; masks are drawn on the
    CPU so the result does not depend on the tensors' device), never from the global RNG.
    ``drop_rate == 0`` returns an exact copy and draws nothing.
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"dare_sparsify: drop_rate must be in [0, 1), got {drop_rate!r}")
    if drop_rate == 0.0:
        return TaskVector._wrap(tv.state_dict())
    keep_scale = 1.0 / (1.0 - drop_rate)
    sparse = {}
    for key, tensor in tv._deltas.items():
        keep = torch.rand(tensor.shape, generator=generator) >= drop_rate
        sparse[key] = torch.where(
            keep.to(tensor.device), tensor * keep_scale, torch.zeros_like(tensor)
        )
    return TaskVector._wrap(sparse)


def average_models(base: nn.Module, finetuned: Mapping[str, nn.Module]) -> nn.Module:
    """The element-wise mean of the fine-tuned models' float entries (integer buffers from
    ``base``); a new model. See :class:`~seqft_lightning.merging.mergers.Average`."""
    _check_finetuned(finetuned)
    base_sd = base.state_dict()
    base_float = ops.float_entries(base_sd)
    total: dict[str, Tensor] | None = None
    for name, model in finetuned.items():
        ft_sd = model.state_dict()
        ops.check_compatible(base_sd, ft_sd, f"base vs finetuned[{name!r}]")
        ft_float = ops.float_entries(ft_sd)
        ops.check_compatible(
            base_float, ft_float, f"base vs finetuned[{name!r}] (floating-point entries)"
        )
        total = ops.scale(ft_float, 1.0) if total is None else ops.add(total, ft_float)
    assert total is not None  # _check_finetuned guarantees one model
    merged = dict(base_sd)
    merged.update({key: tensor / len(finetuned) for key, tensor in total.items()})
    model = copy.deepcopy(base)
    model.load_state_dict(merged, strict=True)
    return model
