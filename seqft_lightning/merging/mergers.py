"""Mergers: one pretrained base plus several fine-tuned models -> one model.

The config key is ``method.merger`` (``conf/merging/*.yaml``). Every merger has
``run(base, finetuned, lambda_=None) -> nn.Module``; it returns a new model and never mutates
``base`` or the fine-tuned models. ``lambda_`` (lambda, dimensionless, the coefficient of the
merged task vector) defaults to the instance's attribute and may be overridden per call.

For a lambda grid search, compute the merged task vector once and apply it many times::

    merged = merger.merged_task_vector(base, finetuned)   # the expensive part (TIES, DARE)
    models = {lambda_: merged.apply_to(base, lambda_) for lambda_ in grid}

which equals ``merger.run(base, finetuned, lambda_=lambda_)`` for every ``lambda_``.
Task vectors follow the convention ``tau = theta_ft - theta_0``.
"""

from __future__ import annotations

import abc
import copy
import logging
import math
from typing import ClassVar, Mapping

import torch
from torch import Tensor, nn

from seqft_lightning.merging import state_dict_ops as ops
from seqft_lightning.merging.task_vector import TaskVector

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------- helpers
def _check_lambda(value: float | None, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: lambda_ must be a finite number, got {value!r}")


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


# ---------------------------------------------------------------------- mergers
class Merger(abc.ABC):
    """A merger. ``lambda_`` is lambda (``None`` if it does not apply)."""

    lambda_: float | None

    @abc.abstractmethod
    def run(self, base: nn.Module, finetuned: Mapping[str, nn.Module], lambda_: float | None = None) -> nn.Module:
        """Merge ``finetuned`` (name -> model) onto ``base``; returns a new model."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in vars(self).items())
        return f"{type(self).__name__}({fields})"


class TaskVectorMerger(Merger):
    """A merger of the form ``theta = theta_0 + lambda * merge(tau_1, ..., tau_T)``."""

    #: Old constructor arguments (config keys ``method.merger.<old>``) -> their new names.
    _renamed: ClassVar[dict[str, str]] = {"scaling_factor": "lambda_"}

    def __init__(self, lambda_: float, **old_names: object) -> None:
        for old in old_names.keys() & self._renamed.keys():
            new = self._renamed[old]
            raise ValueError(f"merger.{old} was renamed to merger.{new}; use method.merger.{new}=...")
        if old_names:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(old_names))!r}")
        _check_lambda(lambda_, type(self).__name__)
        if lambda_ is None:
            raise ValueError(f"{type(self).__name__}: lambda_ must be a number, not None")
        self.lambda_: float = lambda_

    @abc.abstractmethod
    def merged_task_vector(
        self, base: nn.Module, finetuned: Mapping[str, nn.Module]
    ) -> TaskVector:
        """The merged task vector (before lambda); apply it with ``.apply_to(base, lambda_)``."""

    def run(self, base: nn.Module, finetuned: Mapping[str, nn.Module], lambda_: float | None = None) -> nn.Module:
        """``theta_0 + lambda * merged_task_vector``; ``lambda_`` overrides ``self.lambda_``."""
        _check_lambda(lambda_, f"{type(self).__name__}.run")
        return self.merged_task_vector(base, finetuned).apply_to(
            base, self.lambda_ if lambda_ is None else lambda_
        )


class TaskArithmetic(TaskVectorMerger):
    """Task arithmetic (Ilharco et al., ICLR 2023): ``theta = theta_0 + lambda * sum_t tau_t``."""

    def __init__(self, lambda_: float = 0.3, **old_names: object) -> None:
        super().__init__(lambda_, **old_names)

    def merged_task_vector(
        self, base: nn.Module, finetuned: Mapping[str, nn.Module]
    ) -> TaskVector:
        """``sum_t tau_t`` (in ``finetuned``'s order)."""
        return sum(task_vectors(base, finetuned).values())  # type: ignore[return-value]


class Ties(TaskVectorMerger):
    """TIES-merging: ``theta = theta_0 + lambda * ties_merge(tau_1..tau_T, keep_fraction)``.

    ``keep_fraction`` in (0, 1] is the fraction of each task vector's entries kept by the trim
    step (0.2 keeps 20 %), counted over the whole flattened vector (see :func:`ties_merge`).
    """

    _renamed: ClassVar[dict[str, str]] = {**TaskVectorMerger._renamed, "top_k": "keep_fraction"}

    def __init__(self, lambda_: float = 1.0, keep_fraction: float = 0.2, **old_names: object) -> None:
        super().__init__(lambda_, **old_names)
        if (
            isinstance(keep_fraction, bool)
            or not isinstance(keep_fraction, (int, float))
            or not 0.0 < keep_fraction <= 1.0
        ):
            raise ValueError(f"Ties: keep_fraction must be a fraction in (0, 1], got {keep_fraction!r}")
        self.keep_fraction: float = float(keep_fraction)

    def merged_task_vector(
        self, base: nn.Module, finetuned: Mapping[str, nn.Module]
    ) -> TaskVector:
        """The TIES-merged vector (trim, elect sign, disjoint mean), before lambda."""
        return ties_merge(list(task_vectors(base, finetuned).values()), self.keep_fraction)


class Dare(TaskVectorMerger):
    """DARE + task arithmetic: ``theta = theta_0 + lambda * sum_t DARE_p(tau_t)``.

    One ``torch.Generator`` seeded with ``seed`` is created per call and consumed in
    ``finetuned``'s order, then state-dict order: the result is deterministic for a given
    seed and task order, and the global RNG is never touched.
    """

    def __init__(
        self, lambda_: float = 0.3, drop_rate: float = 0.5, seed: int = 0, **old_names: object
    ) -> None:
        super().__init__(lambda_, **old_names)
        if (
            isinstance(drop_rate, bool)
            or not isinstance(drop_rate, (int, float))
            or not 0.0 <= drop_rate < 1.0
        ):
            raise ValueError(f"Dare: drop_rate must be a probability in [0, 1), got {drop_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Dare: seed must be an integer, got {seed!r}")
        self.drop_rate: float = float(drop_rate)
        self.seed: int = seed

    def merged_task_vector(
        self, base: nn.Module, finetuned: Mapping[str, nn.Module]
    ) -> TaskVector:
        """``sum_t DARE_p(tau_t)``, before lambda (same seed -> same result)."""
        generator = torch.Generator(device="cpu")
        generator.manual_seed(self.seed)
        vectors = task_vectors(base, finetuned).values()
        return sum(dare_sparsify(tv, self.drop_rate, generator) for tv in vectors)  # type: ignore[return-value]


class Average(Merger):
    """Plain weight averaging: ``theta = (1/T) sum_t theta_t`` over float params/buffers.

    Lambda does not apply (``lambda_`` is ``None``; passing one to :meth:`run` is a
    ``ValueError`` rather than being silently ignored). Integer buffers come from ``base``,
    which also fixes the architecture every fine-tuned model must match.
    """

    def __init__(self) -> None:
        self.lambda_: float | None = None

    def run(self, base: nn.Module, finetuned: Mapping[str, nn.Module], lambda_: float | None = None) -> nn.Module:
        """The element-wise mean of the fine-tuned models' float entries; a new model."""
        if lambda_ is not None:
            raise ValueError(f"Average: lambda_ does not apply to weight averaging, got {lambda_!r}")
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
