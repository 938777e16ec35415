"""Mergers: one pretrained base plus several fine-tuned models -> one model.

The config key is ``method.merger`` (``conf/merging/*.yaml``). Every merger has
``run(base, finetuned, lambda_=None) -> nn.Module``; it returns a new model and never mutates
``base`` or the fine-tuned models. ``lambda_`` (lambda, dimensionless, the coefficient of the
merged task vector) defaults to the instance's attribute and may be overridden per call.

For a lambda grid search, compute the merged task vector once and apply it many times::

    merged = merger.merged_task_vector(base, finetuned)   # the expensive part (TIES, DARE)
    models = {lambda_: merged.apply_to(base, lambda_) for lambda_ in grid}

which equals ``merger.run(base, finetuned, lambda_=lambda_)`` for every ``lambda_``.
Task vectors follow the convention ``tau = theta_ft - theta_0``. The tensor work is in
:mod:`seqft_lightning.merging.functional`; building a merger imports no torch, so ``plan_run``
checks ``method.merger`` by building it, in well under a second.
"""

from __future__ import annotations

import abc
import math
from typing import TYPE_CHECKING, ClassVar, Mapping

if TYPE_CHECKING:  # torch is imported by the methods that merge, not by building a merger
    from torch import nn

    from seqft_lightning.merging.task_vector import TaskVector


# ---------------------------------------------------------------------- helpers
def _check_lambda(value: float | None, where: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: lambda_ must be a finite number, got {value!r}")


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
        from seqft_lightning.merging.functional import task_vectors

        return sum(task_vectors(base, finetuned).values())  # type: ignore[return-value]


class Ties(TaskVectorMerger):
    """TIES-merging: ``theta = theta_0 + lambda * ties_merge(tau_1..tau_T, keep_fraction)``.

    ``keep_fraction`` in (0, 1] is the fraction of each task vector's entries kept by the trim
    step (0.2 keeps 20 %), counted over the whole flattened vector (see :func:`~seqft_lightning.merging.functional.ties_merge`).
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
        from seqft_lightning.merging.functional import task_vectors, ties_merge

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
        import torch

        from seqft_lightning.merging.functional import dare_sparsify, task_vectors

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
        from seqft_lightning.merging.functional import average_models

        return average_models(base, finetuned)
