"""Task vectors (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023): ``tau = theta_ft -
theta_0`` per floating-point state-dict entry, in the parameters' units; applied with ``lambda_``
(dimensionless): ``theta = theta_base + lambda * tau``. Integer buffers come from the base."""

from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import Tensor, nn

from seqft_lightning.merging import state_dict_ops as ops
from seqft_lightning.values import is_finite_number, is_number


def load_copy(base: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    """A deep copy of ``base`` loaded (strictly) with ``state``."""
    model = copy.deepcopy(base)
    model.load_state_dict(state, strict=True)
    return model


class TaskVector:
    """Per-parameter float deltas ``tau = theta_ft - theta_0``; immutable (operations and
    :meth:`state_dict` return new tensors). Supports ``+``, ``-``, ``-tv``, ``s * tv``, ``tv * s``,
    ``tv / s`` and ``sum([tv1, tv2, ...])`` (``0 + tv`` is ``tv``)."""

    def __init__(self, deltas: Mapping[str, Tensor]) -> None:
        """Wrap copies of ``deltas``, which must all be floating point."""
        if not_float := [key for key, tensor in deltas.items() if not torch.is_floating_point(tensor)]:
            raise ValueError(f"TaskVector: deltas must be floating-point tensors; not float: {not_float[:5]}")
        self._deltas: dict[str, Tensor] = {key: tensor.detach().clone() for key, tensor in deltas.items()}

    @classmethod
    def _wrap(cls, deltas: dict[str, Tensor]) -> TaskVector:
        # Internal: the caller hands over freshly computed tensors, so skip the defensive copy.
        tv = cls.__new__(cls)
        tv._deltas = deltas
        return tv

    @classmethod
    def from_state_dicts(cls, pre: Mapping[str, Tensor], ft: Mapping[str, Tensor]) -> TaskVector:
        """``tau = ft - pre`` over the floating-point entries. Both state dicts must have the same
        keys and shapes (integer buffers included, to catch a wrong architecture)."""
        ops.check_compatible(pre, ft, "pretrained vs finetuned")
        pre_float, ft_float = ops.float_entries(pre), ops.float_entries(ft)
        ops.check_compatible(pre_float, ft_float, "pretrained vs finetuned (floating-point entries)")
        return cls._wrap(ops.sub(ft_float, pre_float))

    @classmethod
    def from_models(cls, pretrained: nn.Module, finetuned: nn.Module) -> TaskVector:
        """``tau = theta(finetuned) - theta(pretrained)`` over float params and buffers."""
        return cls.from_state_dicts(pretrained.state_dict(), finetuned.state_dict())

    def state_dict(self) -> dict[str, Tensor]:
        """A copy of the deltas (``theta_ft - theta_0`` per key)."""
        return {key: tensor.clone() for key, tensor in self._deltas.items()}

    def keys(self) -> list[str]:
        return list(self._deltas)

    def norm(self) -> float:
        """Global L2 norm ``sqrt(sum over all entries of tau^2)``, in parameter units (float64)."""
        squares = [torch.linalg.vector_norm(tensor.double()).item() ** 2 for tensor in self._deltas.values()]
        return math.sqrt(math.fsum(squares))

    def __repr__(self) -> str:
        return f"TaskVector(tensors={len(self._deltas)}, numel={sum(t.numel() for t in self._deltas.values())})"

    def _combine(self, other: object, op, symbol: str) -> TaskVector:
        if is_number(other) and other == 0:
            return TaskVector._wrap(self.state_dict())
        if not isinstance(other, TaskVector):
            return NotImplemented
        ops.check_compatible(self._deltas, other._deltas, f"TaskVector {symbol} TaskVector")
        return TaskVector._wrap(op(self._deltas, other._deltas))

    def __add__(self, other: object) -> TaskVector:
        return self._combine(other, ops.add, "+")

    __radd__ = __add__  # builtin sum() starts from the integer 0

    def __sub__(self, other: object) -> TaskVector:
        return self._combine(other, ops.sub, "-")

    def __neg__(self) -> TaskVector:
        return TaskVector._wrap({key: -tensor for key, tensor in self._deltas.items()})

    def __mul__(self, other: object) -> TaskVector:
        if not is_number(other):
            return NotImplemented
        return TaskVector._wrap(ops.scale(self._deltas, float(other)))  # type: ignore[arg-type]

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> TaskVector:
        if not is_number(other):
            return NotImplemented
        if other == 0:
            raise ZeroDivisionError("TaskVector / 0")
        return TaskVector._wrap({key: tensor / float(other) for key, tensor in self._deltas.items()})  # type: ignore

    def apply_to(self, base: nn.Module, lambda_: float = 1.0) -> nn.Module:
        """A new model (deep copy of ``base``) with ``theta = theta_base + lambda_ * tau`` on the float
        entries, which must match this vector's keys and shapes, cast to ``base``'s dtypes."""
        if not is_finite_number(lambda_):
            raise ValueError(f"apply_to: lambda_ must be a finite number, got {lambda_!r}")
        base_sd = base.state_dict()
        base_float = ops.float_entries(base_sd)
        ops.check_compatible(base_float, self._deltas, "base model (floating-point entries) vs task vector")
        merged = {key: theta + lambda_ * self._deltas[key].to(theta.device) for key, theta in base_float.items()}
        return load_copy(base, {**base_sd, **merged})  # integer buffers: load_state_dict copies them
