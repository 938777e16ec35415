"""Mergers (``method.merger``, ``conf/merging/*.yaml``): a pretrained base plus fine-tuned models ->
one new model by ``run(base, finetuned, lambda_=None)``, never mutating its inputs. ``lambda_``
(dimensionless, the coefficient of the merged task vector ``tau = theta_ft - theta_0``) defaults to
the instance's; for a grid, merge once (``merged_task_vector``) and ``apply_to(base, lambda_)`` each
value. Building a merger imports no torch, so ``plan_run`` checks ``method.merger`` by building it."""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, ClassVar, Mapping

from seqft_lightning.values import is_finite_number, is_number

if TYPE_CHECKING:  # torch is imported by the methods that merge, not by building a merger
    from torch import nn

    from seqft_lightning.merging.task_vector import TaskVector


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

    def __init__(self, lambda_: float = 0.3, **old_names: object) -> None:
        for old in old_names.keys() & self._renamed.keys():
            new = self._renamed[old]
            raise ValueError(f"merger.{old} was renamed to merger.{new}; use method.merger.{new}=...")
        if old_names:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(old_names))!r}")
        if not is_finite_number(lambda_):
            raise ValueError(f"{type(self).__name__}: lambda_ must be a finite number, got {lambda_!r}")
        self.lambda_: float = lambda_

    @abc.abstractmethod
    def _merge(self, vectors: list[TaskVector]) -> TaskVector:
        """The task vectors ``tau_t`` (in ``finetuned``'s order) merged into one, before lambda."""

    def merged_task_vector(self, base: nn.Module, finetuned: Mapping[str, nn.Module]) -> TaskVector:
        """The merged task vector (before lambda); apply it with ``.apply_to(base, lambda_)``."""
        from seqft_lightning.merging.functional import task_vectors

        return self._merge(list(task_vectors(base, finetuned).values()))

    def run(self, base: nn.Module, finetuned: Mapping[str, nn.Module], lambda_: float | None = None) -> nn.Module:
        """``theta_0 + lambda * merged_task_vector``; ``lambda_`` (``apply_to`` checks it) overrides the instance's."""
        return self.merged_task_vector(base, finetuned).apply_to(base, self.lambda_ if lambda_ is None else lambda_)


class TaskArithmetic(TaskVectorMerger):
    """Task arithmetic (Ilharco et al., ICLR 2023): ``theta = theta_0 + lambda * sum_t tau_t``."""

    def _merge(self, vectors: list[TaskVector]) -> TaskVector:
        return sum(vectors)  # type: ignore[return-value]


class Ties(TaskVectorMerger):
    """TIES-merging: ``theta = theta_0 + lambda * ties_merge(tau_1..tau_T, keep_fraction)``, where
    ``keep_fraction`` in (0, 1] is the fraction of each task vector's entries (counted over the whole
    vector) that the trim step keeps (0.2 keeps 20 %)."""

    _renamed: ClassVar[dict[str, str]] = {**TaskVectorMerger._renamed, "top_k": "keep_fraction"}

    def __init__(self, lambda_: float = 1.0, keep_fraction: float = 0.2, **old_names: object) -> None:
        super().__init__(lambda_, **old_names)
        if not (is_number(keep_fraction) and 0.0 < keep_fraction <= 1.0):
            raise ValueError(f"Ties: keep_fraction must be a fraction in (0, 1], got {keep_fraction!r}")
        self.keep_fraction: float = float(keep_fraction)

    def _merge(self, vectors: list[TaskVector]) -> TaskVector:
        from seqft_lightning.merging.functional import ties_merge

        return ties_merge(vectors, self.keep_fraction)


class Dare(TaskVectorMerger):
    """DARE + task arithmetic: ``theta = theta_0 + lambda * sum_t DARE_p(tau_t)``, ``p = drop_rate``; one
    ``torch.Generator(seed)`` per call, consumed in task then state-dict order (global RNG untouched)."""

    def __init__(self, lambda_: float = 0.3, drop_rate: float = 0.5, seed: int = 0, **old_names: object) -> None:
        super().__init__(lambda_, **old_names)
        if not (is_number(drop_rate) and 0.0 <= drop_rate < 1.0):
            raise ValueError(f"Dare: drop_rate must be a probability in [0, 1), got {drop_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"Dare: seed must be an integer, got {seed!r}")
        self.drop_rate: float = float(drop_rate)
        self.seed: int = seed

    def _merge(self, vectors: list[TaskVector]) -> TaskVector:
        import torch

        from seqft_lightning.merging.functional import dare_sparsify

        generator = torch.Generator(device="cpu").manual_seed(self.seed)
        return sum(dare_sparsify(tv, self.drop_rate, generator) for tv in vectors)  # type: ignore[return-value]


class Average(Merger):
    """Plain weight averaging: ``theta = (1/T) sum_t theta_t`` over float params/buffers (integer
    buffers from ``base``). Lambda does not apply: ``lambda_`` is ``None``, and passing one to
    :meth:`run` is a ``ValueError`` rather than being silently ignored."""

    def __init__(self) -> None:
        self.lambda_: float | None = None

    def run(self, base: nn.Module, finetuned: Mapping[str, nn.Module], lambda_: float | None = None) -> nn.Module:
        if lambda_ is not None:
            raise ValueError(f"Average: lambda_ does not apply to weight averaging, got {lambda_!r}")
        from seqft_lightning.merging.functional import average_models

        return average_models(base, finetuned)
