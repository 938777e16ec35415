"""L2-SP (Li et al. 2018): ``penalty = (α / 2) · Σ_k (θ_k − θ⁰_k)²`` towards the trainable float
parameters ``θ⁰`` at ``on_finetune_start`` (the shared head included). Units: α per squared parameter
unit; 0 at ``θ⁰``, > 0 elsewhere."""

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
