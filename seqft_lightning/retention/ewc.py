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

from seqft_lightning.cost import tensor_bytes
from seqft_lightning.retention.base import Retention, move_to, snapshot_params, trainable_params

log = logging.getLogger(__name__)

__all__ = ["EWC", "empirical_fisher"]


def _linear_owners(net: nn.Module, names: Sequence[str]) -> dict[str, tuple[nn.Linear, str]] | None:
    """``{param name: (its nn.Linear, "weight" | "bias")}`` when every name is a Linear's parameter."""
    owners = {}
    for module_name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            for kind in ("weight", "bias"):
                full = f"{module_name}.{kind}" if module_name else kind
                if getattr(module, kind) is not None:
                    owners[full] = (module, kind)
    return owners if all(n in owners for n in names) else None


def _linear_fisher_sums(net: nn.Module, owners: dict, names: Sequence[str], x: Tensor, y: Tensor) -> dict[str, Tensor]:
    """``Σ_n g_n²`` for Linear parameters by two matmuls per layer.

    The per-sample gradient of a Linear layer's weight is the outer product ``δ_n a_nᵀ`` of the
    error ``δ_n`` at its output and its input ``a_n``, so ``Σ_n (δ_n a_nᵀ)² = (δ²)ᵀ (a²)``, and the
    bias's is ``Σ_n δ_n²``. ``δ_n`` comes from one backward pass of the *summed* loss: each sample's
    loss depends on its own outputs only.
    """
    layers = {id(module): module for module, _ in (owners[n] for n in names)}
    inputs, outputs = {}, {}

    def keep(module, args, out):
        inputs[id(module)] = args[0].detach()
        out.retain_grad()
        outputs[id(module)] = out

    handles = [m.register_forward_hook(keep) for m in layers.values()]
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(net(x), y, reduction="sum")
            errors = torch.autograd.grad(loss, [outputs[k] for k in layers])
    finally:
        for handle in handles:
            handle.remove()
    delta_sq = {k: e.pow(2) for k, e in zip(layers, errors)}
    sums = {}
    for n in names:
        module, kind = owners[n]
        d2 = delta_sq[id(module)]
        sums[n] = d2.T @ inputs[id(module)].pow(2) if kind == "weight" else d2.sum(0)
    return sums


def empirical_fisher(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    names: Sequence[str],
    batch_size: int = 64,
) -> dict[str, Tensor]:
    """Diagonal empirical Fisher ``mean_n g_n²`` of ``log p(y_n | x_n)`` w.r.t. ``names``.

    Per-sample gradients ``g_n``: for parameters of ``nn.Linear`` layers (the MLP) by two matmuls
    per layer over a whole chunk (:func:`_linear_fisher_sums`); otherwise with ``torch.func.vmap``.
    ``batch_size`` only chunks the computation (memory). Does not touch ``.grad`` of the net's
    parameters. Returns tensors shaped like the parameters, on the parameters' device.
    """
    if not names:
        return {}
    params = dict(net.named_parameters())
    device = params[names[0]].device
    owners = _linear_owners(net, names)
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
            if owners is not None:
                sums = _linear_fisher_sums(net, owners, names, xb, yb)
            else:
                sums = {n: g.pow(2).sum(0) for n, g in per_sample_grad(theta, xb, yb).items()}
            for n, g2 in sums.items():
                fisher[n] += g2
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
        self.fisher_samples_used = 0  # per-sample gradients computed (cost accounting)

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        return self.fisher_samples_used * train_per_sample  # a forward and a backward per sample

    def extra_memory_bytes(self) -> int:
        return tensor_bytes(self.fisher) + tensor_bytes(self.anchor)

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
        self.fisher_samples_used += len(idx)
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
