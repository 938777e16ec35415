"""L2-SP: L2 pull towards the pretrained starting point (Li et al. 2018).

``penalty = (α / 2) · Σ_k (θ_k − θ⁰_k)²`` (design choice: with the factor 1/2 of
the paper) over the trainable floating-point parameters at
``on_finetune_start``, where ``θ⁰`` is stored.  The head is shared by all tasks
here, so it is included (the paper leaves a new head out).  Units: α per
squared parameter unit; 0 at ``θ⁰``, > 0 elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import Tensor, nn

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention, move_to, snapshot_params

log = logging.getLogger(__name__)

__all__ = ["L2SP"]


class L2SP(Retention):
    """Penalty ``(α/2) ‖θ − θ⁰‖²`` towards the pretrained weights.

    Args:
        alpha: strength α (>= 0).
    """

    name = "l2sp"

    def __init__(self, alpha: float = 0.01) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.anchor: dict[str, Tensor] = {}

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        if self.alpha == 0:
            return "alpha=0: no penalty"
        return super().inactive_reason(has_pool, num_stages)

    def extra_memory_bytes(self) -> int:
        return tensor_bytes(self.anchor)

    def settings(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        self.anchor = snapshot_params(net)

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if not self.anchor:
            return None
        params = dict(net.named_parameters())
        self.anchor = move_to(self.anchor, params[next(iter(self.anchor))].device)
        total = sum((params[n] - a).pow(2).sum() for n, a in self.anchor.items())
        return 0.5 * self.alpha * total
