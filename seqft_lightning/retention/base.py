"""Base classes of the retention strategies. The stage loop calls ``on_finetune_start(net, datamodule)``
once, after the baseline is ready; then per stage ``k`` (from 1; stage 0 is the baseline) on
``classes``: ``wrap_train_loader(loader, k, classes)``, ``on_stage_start(net, k, classes)``, training
(each step adds ``penalty(net, x, y, logits)``, unless ``None``, to the cross-entropy) and
``on_stage_end(net, k, classes, datamodule)``. Hooks never mutate the caller's ``classes`` or loader."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes


def pretrain_pool(datamodule: Any) -> tuple[Tensor, Tensor] | None:
    """The datamodule's pretraining pool ``(x, y)``, or ``None`` when it is missing or empty."""
    x, y = getattr(datamodule, "pretrain_x", None), getattr(datamodule, "pretrain_y", None)
    return None if x is None or y is None or len(y) == 0 else (x, y)


class Retention:
    """No-op retention strategy (``none``): plain sequential fine-tuning. Subclasses override the hooks they need."""

    name: str = "none"
    #: Attribute holding the penalty strength: at 0 the strategy cannot act.
    strength: str | None = None

    def check_model(self, net: nn.Module) -> None:
        """Raise ``ValueError`` (one line) when a setting does not fit ``net`` (``plan_run``: before any work)."""

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        """Called once, after pretraining and before the first fine-tuning stage."""

    def wrap_train_loader(self, loader: Any, stage: int, classes: Sequence[int]) -> Any:
        """Return the loader to train stage ``stage`` on (default: unchanged)."""
        return loader

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        """Called right before training stage ``stage`` on ``classes``."""

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        """Extra loss term (scalar, >= 0, in cross-entropy units) for the training batch ``x``/``y``
        with ``logits = net(x)`` (with autograd graph), or ``None``."""
        return None

    def on_stage_end(self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any) -> None:
        """Called right after training stage ``stage`` on ``classes``."""

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        """Why this strategy cannot change a run with ``num_stages`` training stages and a pretraining
        pool (``has_pool``), or ``None`` when it can act (``none`` never acts and says nothing)."""
        if self.strength is not None and getattr(self, self.strength) == 0:
            return f"{self.strength}=0: no penalty"
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
        """Constructor settings of the strategy (JSON-serialisable scalars/lists), in signature order."""
        values = {key: getattr(self, key) for key in inspect.signature(type(self)).parameters}
        return {key: list(v) if isinstance(v, tuple) else v for key, v in values.items()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.settings().items())
        return f"{type(self).__name__}({args})"


class Anchored(Retention):
    """Penalty ``(s/2) · Σ_k w_k · (θ_k − θ*_k)²`` (``s``: the :attr:`strength` attribute; ``w_k = 1``
    unless :meth:`_weight` says otherwise) towards the anchor ``θ*`` taken at ``on_finetune_start`` over
    the trainable float parameters. The dicts in :attr:`stored` count as extra memory; the penalty reads
    them flattened into one vector each, on the net's device (Lightning may move the net after a hook)."""

    stored: tuple[str, ...] = ("anchor",)
    anchor: dict[str, Tensor]  # set to {} by the constructor

    def _weight(self, flat: dict[str, Tensor], sq_dist: Tensor) -> Tensor:
        """``w · sq_dist`` over the flat parameter vector; ``flat``: each :attr:`stored` dict, flattened alike."""
        return sq_dist

    def extra_memory_bytes(self) -> int:
        return sum(tensor_bytes(getattr(self, attr)) for attr in self.stored)

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        params = net.named_parameters()
        self.anchor = {n: p.detach().clone() for n, p in params if p.requires_grad and p.is_floating_point()}

    def _flat(self, device: torch.device) -> dict[str, Tensor]:
        """Each :attr:`stored` dict as one vector (anchor order) on ``device``, rebuilt when a dict is replaced."""
        dicts = [getattr(self, attr) for attr in self.stored]
        cached = getattr(self, "_flat_cache", None)
        if cached is None or cached[0] != device or any(a is not b for a, b in zip(cached[1], dicts)):
            flat = {attr: torch.cat([d[n].to(device).reshape(-1) for n in self.anchor]) for attr, d in zip(self.stored, dicts)}
            self._flat_cache = (device, dicts, flat)
        return self._flat_cache[2]

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        # One vector for all parameters: a handful of ops per step instead of a handful per tensor.
        # Each entry's gradient, λ·w·(θ − θ*), is the same elementwise arithmetic as per tensor.
        if not self.anchor:
            return None
        params = dict(net.named_parameters())
        theta = torch.cat([params[n].reshape(-1) for n in self.anchor])
        flat = self._flat(theta.device)
        total = self._weight(flat, (theta - flat["anchor"]).pow(2)).sum()
        return 0.5 * getattr(self, self.strength) * total
