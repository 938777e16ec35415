"""Online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

Fisher (design choice)
    Diagonal *empirical* Fisher with the TRUE labels:
    ``F_k = mean_n (∂ log p(y_n | x_n; θ) / ∂θ_k)²`` computed from per-sample
    gradients (``torch.func.vmap``; ``batch_size`` only chunks the computation),
    with the net in eval mode.  Units: (nats / parameter unit)².

    * ``on_finetune_start``: estimated on a seeded random subset of at most
      ``fisher_samples`` samples of the pretraining pool; with an empty or missing
      pool, ``F = 0`` (no penalty until the first stage ends).
    * ``on_stage_end`` (online EWC): ``F ← decay · F + F_stage`` with ``F_stage``
      estimated on that stage's task data, and the anchor ``θ* ← θ``.

Penalty (design choice: with the factor 1/2 of Kirkpatrick et al.)
    ``penalty = (λ / 2) · Σ_k F_k · (θ_k − θ*_k)²`` over the trainable
    floating-point parameters present when ``on_finetune_start`` ran.
    It is 0 at ``θ = θ*`` and > 0 away from it wherever ``F > 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from seqft_lightning.retention.base import Retention, move_to, snapshot_params, trainable_params

log = logging.getLogger(__name__)

__all__ = ["EWC", "empirical_fisher"]


def empirical_fisher(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    names: Sequence[str],
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher ``mean_n g_n²`` of ``log p(y_n | x_n)`` w.r.t. ``names``.

    Uses per-sample gradients; does not touch ``.grad`` of the net's parameters.
    Returns tensors shaped like the parameters, on the parameters' device.
    """
    if not names:
        return {}
    params = dict(net.named_parameters())
    device = params[names[0]].device
    theta = {n: params[n].detach() for n in names}
    buffers = {n: b.detach() for n, b in net.named_buffers()}

    def nll(p: dict[str, Tensor], x1: Tensor, y1: Tensor) -> Tensor:
        out = functional_call(net, (p, buffers), (x1.unsqueeze(0),))
        return F.cross_entropy(out, y1.unsqueeze(0))  # = −log p(y|x); same square

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(t) for n, t in theta.items()}
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = y[start:start + batch_size].to(device)
            grads = per_sample_grad(theta, xb, yb)
            for n, g in grads.items():
                fisher[n] += g.pow(2).sum(0)
    finally:
        net.train(was_training)
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


class EWC(Retention):
    """Online EWC penalty ``(λ/2) Σ F (θ − θ*)²``.

    Args:
        lambda_: penalty strength λ (>= 0, dimensionless multiplier of the Fisher term).
        decay: online-EWC factor γ in ``F ← γ F + F_new`` (>= 0; 1 = sum of Fishers).
        fisher_samples: max samples used per Fisher estimate.
        batch_size: chunk size of the per-sample gradient computation (memory only).
        seed: seed of the generator selecting the Fisher subset.
    """

    name = "ewc"

    def __init__(
        self,
        lambda_: float = 100.0,
        decay: float = 1.0,
        fisher_samples: int = 1000,
        batch_size: int = 64,
        seed: int = 0,
    ) -> None:
        if lambda_ < 0 or decay < 0:
            raise ValueError(f"lambda_ and decay must be >= 0, got {lambda_}, {decay}")
        if fisher_samples < 1 or batch_size < 1:
            raise ValueError(f"fisher_samples and batch_size must be >= 1, got {fisher_samples}, {batch_size}")
        self.lambda_ = float(lambda_)
        self.decay = float(decay)
        self.fisher_samples = int(fisher_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.fisher: dict[str, Tensor] = {}
        self.anchor: dict[str, Tensor] = {}

    def settings(self) -> dict[str, Any]:
        return {
            "lambda_": self.lambda_,
            "decay": self.decay,
            "fisher_samples": self.fisher_samples,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }

    def _estimate(self, net: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(y), generator=gen)[: self.fisher_samples].to(y.device)
        return empirical_fisher(net, x[idx], y[idx], list(self.anchor), self.batch_size)

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        if self.lambda_ == 0:
            return "lambda_=0: no penalty"
        if num_stages == 1 and not has_pool:
            return "one training stage and no pretraining pool: the Fisher is 0 while it trains"
        return super().inactive_reason(has_pool, num_stages)

    # ------------------------------------------------------------------ hooks
    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        self.anchor = snapshot_params(net)
        x = getattr(datamodule, "pretrain_x", None)
        y = getattr(datamodule, "pretrain_y", None)
        if x is None or y is None or len(y) == 0:
            log.info("EWC: no pretraining pool, starting with F = 0")
            self.fisher = {n: torch.zeros_like(t) for n, t in self.anchor.items()}
        else:
            self.fisher = self._estimate(net, x, y)

    def on_stage_end(
        self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any
    ) -> None:
        x, y = datamodule.task_data(list(classes))
        params = trainable_params(net)
        # Keep the parameter set fixed at on_finetune_start's (names in self.anchor).
        self.anchor = {n: params[n].detach().clone() for n in self.anchor}
        new = self._estimate(net, x, y)
        self.fisher = {
            n: self.decay * self.fisher[n].to(new[n].device) + new[n] for n in new
        }

    def penalty(self, net: nn.Module, x: Tensor, y: Tensor, logits: Tensor) -> Tensor | None:
        if not self.anchor:
            return None
        params = dict(net.named_parameters())
        device = params[next(iter(self.anchor))].device
        self.anchor, self.fisher = move_to(self.anchor, device), move_to(self.fisher, device)
        total = sum(
            (self.fisher[n] * (params[n] - a).pow(2)).sum() for n, a in self.anchor.items()
        )
        return 0.5 * self.lambda_ * total
