"""Task vectors (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023).

Sign convention: a task vector is ``tau = theta_ft - theta_0`` (fine-tuned minus
pretrained), per floating-point state-dict entry, in the parameters' own units.
Applying it with coefficient ``lambda_`` (dimensionless) gives ``theta = theta_base + lambda * tau``;
``lambda = 1`` on the pretrained model gives back the fine-tuned model (up to float rounding).

Integer/bool buffers are not part of a task vector; models built by :meth:`TaskVector.apply_to`
keep those from the base model.
"""

from __future__ import annotations

import copy
import math
from typing import Mapping

import torch
from torch import Tensor, nn

from seqft_lightning.merging import state_dict_ops as ops


def _is_zero_scalar(value: object) -> bool:
    # bool is an int subclass; `tv + False` is almost certainly a bug, so refuse it.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0


def _is_scalar(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TaskVector:
    """Per-parameter deltas ``tau = theta_ft - theta_0`` (floating-point tensors only).

    Instances are treated as immutable: every operation returns a new ``TaskVector`` and
    :meth:`state_dict` returns copies. Supports ``tv1 + tv2``, ``tv1 - tv2``, ``-tv``,
    ``s * tv``, ``tv * s``, ``tv / s`` and ``sum([tv1, tv2, ...])`` (``0 + tv`` is ``tv``).
    """

    def __init__(self, deltas: Mapping[str, Tensor]) -> None:
        """Wrap ``deltas`` (copied and detached). All tensors must be floating point."""
        not_float = [key for key, tensor in deltas.items() if not torch.is_floating_point(tensor)]
        if not_float:
            raise ValueError(
                f"TaskVector: deltas must be floating-point tensors; not float: {not_float[:5]}"
            )
        self._deltas: dict[str, Tensor] = {
            key: tensor.detach().clone() for key, tensor in deltas.items()
        }

    @classmethod
    def _wrap(cls, deltas: dict[str, Tensor]) -> "TaskVector":
        # Internal: the caller hands over freshly computed tensors, so skip the defensive copy.
        tv = cls.__new__(cls)
        tv._deltas = deltas
        return tv

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_state_dicts(
        cls, pre: Mapping[str, Tensor], ft: Mapping[str, Tensor]
    ) -> "TaskVector":
        """``tau = ft - pre`` over the floating-point entries.

        Both state dicts must have the same keys and shapes (integer buffers included, so a
        wrong architecture is caught even if it only differs in a buffer).
        """
        ops.check_compatible(pre, ft, "pretrained vs finetuned")
        pre_float = ops.float_entries(pre)
        ft_float = ops.float_entries(ft)
        ops.check_compatible(pre_float, ft_float, "pretrained vs finetuned (floating-point entries)")
        return cls._wrap(ops.sub(ft_float, pre_float))

    @classmethod
    def from_models(cls, pretrained: nn.Module, finetuned: nn.Module) -> "TaskVector":
        """``tau = theta(finetuned) - theta(pretrained)`` over float params and buffers."""
        return cls.from_state_dicts(pretrained.state_dict(), finetuned.state_dict())

    # ------------------------------------------------------------------ accessors
    def state_dict(self) -> dict[str, Tensor]:
        """A copy of the deltas (``theta_ft - theta_0`` per key)."""
        return {key: tensor.clone() for key, tensor in self._deltas.items()}

    def keys(self) -> list[str]:
        """Parameter/buffer names, in state-dict order."""
        return list(self._deltas)

    def __len__(self) -> int:
        return len(self._deltas)

    def numel(self) -> int:
        """Total number of scalar entries."""
        return sum(tensor.numel() for tensor in self._deltas.values())

    def norm(self) -> float:
        """Global L2 norm ``sqrt(sum over all entries of tau^2)``, in parameter units."""
        # Accumulate per-tensor norms in float64 so large models do not lose precision.
        squares = [
            torch.linalg.vector_norm(tensor.double()).item() ** 2
            for tensor in self._deltas.values()
        ]
        return math.sqrt(math.fsum(squares))

    def __repr__(self) -> str:
        return f"TaskVector(tensors={len(self)}, numel={self.numel()})"

    # ------------------------------------------------------------------ algebra
    def __add__(self, other: object) -> "TaskVector":
        if _is_zero_scalar(other):
            return TaskVector._wrap(self.state_dict())
        if not isinstance(other, TaskVector):
            return NotImplemented
        ops.check_compatible(self._deltas, other._deltas, "TaskVector + TaskVector")
        return TaskVector._wrap(ops.add(self._deltas, other._deltas))

    def __radd__(self, other: object) -> "TaskVector":
        # Makes builtin sum() work: sum starts from the integer 0.
        return self.__add__(other)

    def __neg__(self) -> "TaskVector":
        return TaskVector._wrap({key: -tensor for key, tensor in self._deltas.items()})

    def __sub__(self, other: object) -> "TaskVector":
        if _is_zero_scalar(other):
            return TaskVector._wrap(self.state_dict())
        if not isinstance(other, TaskVector):
            return NotImplemented
        ops.check_compatible(self._deltas, other._deltas, "TaskVector - TaskVector")
        return TaskVector._wrap(ops.sub(self._deltas, other._deltas))

    def __mul__(self, other: object) -> "TaskVector":
        if not _is_scalar(other):
            return NotImplemented
        return TaskVector._wrap(ops.scale(self._deltas, float(other)))  # type: ignore[arg-type]

    def __rmul__(self, other: object) -> "TaskVector":
        return self.__mul__(other)

    def __truediv__(self, other: object) -> "TaskVector":
        if not _is_scalar(other):
            return NotImplemented
        if other == 0:
            raise ZeroDivisionError("TaskVector / 0")
        return TaskVector._wrap(
            {key: tensor / float(other) for key, tensor in self._deltas.items()}  # type: ignore[arg-type]
        )

    # ------------------------------------------------------------------ application
    def apply_to(self, base: nn.Module, lambda_: float = 1.0) -> nn.Module:
        """A NEW model (deep copy of ``base``) with ``theta = theta_base + lambda_ * tau``.

        Only floating-point params/buffers change; integer buffers are copied from ``base``.
        ``base`` is not modified. The float entries of ``base`` must match this vector's keys
        and shapes exactly (``ValueError`` otherwise). Results are cast to ``base``'s dtypes.
        """
        if not _is_scalar(lambda_) or not math.isfinite(lambda_):
            raise ValueError(f"apply_to: lambda_ must be a finite number, got {lambda_!r}")
        base_sd = base.state_dict()
        base_float = ops.float_entries(base_sd)
        ops.check_compatible(
            base_float, self._deltas, "base model (floating-point entries) vs task vector"
        )
        merged = dict(base_sd)  # integer buffers: same tensors, load_state_dict copies them
        for key, theta in base_float.items():
            delta = self._deltas[key].to(theta.device)
            merged[key] = theta + lambda_ * delta
        model = copy.deepcopy(base)
        # strict=True: keys were checked above; this also catches anything missed.
        model.load_state_dict(merged, strict=True)
        return model
