"""L2-SP: L2 pull towards the pretrained starting point (Li et al. 2018).

``penalty = (α / 2) · Σ_k (θ_k − θ⁰_k)²`` (design choice: with the factor 1/2 of the paper) over
the trainable floating-point parameters at ``on_finetune_start``, where ``θ⁰`` is stored. The head
is shared by all tasks here, so it is included (the paper leaves a new head out). Units: α per
squared parameter unit; 0 at ``θ⁰``, > 0 elsewhere.
"""

from __future__ import annotations

from seqft_lightning.retention.base import Anchored


class L2SP(Anchored):
    """Penalty ``(α/2) ‖θ − θ⁰‖²`` towards the pretrained weights; ``alpha`` is α (>= 0)."""

    name = "l2sp"
    strength = "alpha"

    def __init__(self, alpha: float = 0.01) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.anchor = {}
