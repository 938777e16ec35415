"""Base class of the retention strategies and small helpers they share.

A retention strategy is plugged into the fine-tuning stage loop.  The loop calls,
in this order:

* ``on_finetune_start(net, datamodule)`` once, after the pretrained baseline is
  ready and before any fine-tuning stage;
* per stage ``k`` (numbered from 1, as in ``stages.csv``; stage 0 is the baseline) with class
  list ``classes``: ``loader = wrap_train_loader(loader, k, classes)``,
  ``on_stage_start(net, k, classes)``,
  training, during which every step adds ``penalty(net, x, y, logits)`` (when not
  ``None``) to the cross-entropy loss,
  ``on_stage_end(net, k, classes, datamodule)``.

:class:`Retention` itself does nothing: it is the ``none`` option, i.e. plain
fine-tuning.  Hooks never mutate the caller's ``classes`` list or loader.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)

__all__ = ["Retention", "trainable_params", "snapshot_params"]


def trainable_params(net: nn.Module) -> dict[str, nn.Parameter]:
    """Named parameters that are trainable floating-point tensors.

    These are the parameters the weight-space penalties (EWC, L2-SP) act on.
    """
    return {
        name: p
        for name, p in net.named_parameters()
        if p.requires_grad and p.is_floating_point()
    }


def snapshot_params(net: nn.Module) -> dict[str, Tensor]:
    """Detached copies of :func:`trainable_params` (same device and dtype)."""
    return {name: p.detach().clone() for name, p in trainable_params(net).items()}


def move_to(tensors: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    """Return ``tensors`` on ``device`` (the same dict when already there).

    Hooks may run while the net is still on the CPU and Lightning moves it to the
    accelerator later, so stored tensors are moved lazily at penalty time.
    """
    if all(t.device == device for t in tensors.values()):
        return tensors
    return {name: t.to(device) for name, t in tensors.items()}


class Retention:
    """No-op retention strategy (``none``): plain sequential fine-tuning.

    Subclasses override the hooks they need and :meth:`settings`.
    """

    name: str = "none"

    # ------------------------------------------------------------------ hooks
    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        """Called once, after pretraining and before the first fine-tuning stage."""

    def wrap_train_loader(self, loader: Any, stage: int, classes: Sequence[int]) -> Any:
        """Return the loader to train stage ``stage`` on (default: unchanged)."""
        return loader

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        """Called right before training stage ``stage`` on ``classes``."""

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        """Extra loss term (scalar, >= 0, same units as the cross-entropy) or ``None``.

        ``x``/``y`` is the training batch, ``logits = net(x)`` with autograd graph.
        """
        return None

    def on_stage_end(
        self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any
    ) -> None:
        """Called right after training stage ``stage`` on ``classes``."""

    # --------------------------------------------------------------- metadata
    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        """Why this strategy cannot change a run with ``num_stages`` training stages and a
        pretraining pool (``has_pool``), or ``None`` when it can act. The base (``none``) never
        acts and says nothing; subclasses name the missing ingredient."""
        if num_stages == 0 and type(self) is not Retention:
            return "the method trains no stage through the stage loop"
        return None

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        """FLOPs of the strategy's own work so far (teacher forwards, Fisher estimates), given a
        forward's and a training step's FLOPs per sample (see :mod:`seqft_lightning.cost`)."""
        return 0.0

    def extra_memory_bytes(self) -> int:
        """Bytes the strategy keeps beyond the net (teacher, Fisher, anchors, replay memory)."""
        return 0

    def settings(self) -> dict[str, Any]:
        """Constructor settings of the strategy (JSON-serialisable scalars/lists)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"
