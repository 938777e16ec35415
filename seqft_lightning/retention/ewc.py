"""Online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

Fisher (design choice): diagonal *empirical* Fisher with the TRUE labels, ``F_k = mean_n (∂ log
p(y_n | x_n; θ) / ∂θ_k)²`` from per-sample gradients, net in eval mode; units (nats / parameter
unit)². At ``on_finetune_start`` it is estimated on a seeded random subset of at most
``fisher_samples`` samples of the pretraining pool (no pool: ``F = 0``, no penalty until the first
stage ends); at ``on_stage_end`` (online EWC) ``F ← decay · F + F_stage``, estimated on that stage's
task data, and the anchor ``θ* ← θ``.

Penalty (design choice: with the factor 1/2 of Kirkpatrick et al.): ``(λ / 2) · Σ_k F_k · (θ_k −
θ*_k)²`` over the trainable floating-point parameters present at ``on_finetune_start``; 0 at
``θ = θ*``, > 0 away from it wherever ``F > 0``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqft_lightning.retention.base import Anchored, pretrain_pool

log = logging.getLogger(__name__)


def empirical_fisher(net: nn.Module, x: Tensor, y: Tensor, names: Sequence[str], batch_size: int = 64) -> dict:
    """Diagonal empirical Fisher ``mean_n g_n²`` of ``log p(y_n | x_n)`` w.r.t. ``names`` (parameters of
    ``nn.Linear`` layers), shaped like the parameters, on their device; ``.grad`` is not touched.

    A Linear weight's per-sample gradient is ``δ_n a_nᵀ`` (error at its output, its input), so
    ``Σ_n (δ_n a_nᵀ)² = (δ²)ᵀ (a²)`` and the bias's is ``Σ_n δ_n²``: two matmuls per layer per chunk
    of ``batch_size`` samples (memory only), with ``δ_n`` from one backward pass of the *summed* loss.
    """
    if not names:
        return {}
    owners = {n: (net.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names}
    if not all(isinstance(module, nn.Linear) for module, _ in owners.values()):
        return _vmap_fisher(net, x, y, names, batch_size)
    fisher = {n: torch.zeros_like(getattr(module, kind)) for n, (module, kind) in owners.items()}
    device = fisher[names[0]].device
    layers = list(dict.fromkeys(module for module, _ in owners.values()))
    inputs, outputs = {}, {}

    def keep(module: nn.Module, args: tuple, out: Tensor) -> None:
        inputs[module], outputs[module] = args[0].detach(), out

    handles = [module.register_forward_hook(keep) for module in layers]
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            with torch.enable_grad():
                loss = F.cross_entropy(net(xb), yb, reduction="sum")  # = Σ −log p(y|x); same squares
                errors = torch.autograd.grad(loss, [outputs[module] for module in layers])
            delta_sq = {module: e.pow(2) for module, e in zip(layers, errors)}
            for n, (module, kind) in owners.items():
                d2 = delta_sq[module]
                fisher[n] += d2.T @ inputs[module].pow(2) if kind == "weight" else d2.sum(0)
    finally:
        net.train(was_training)
        for handle in handles:
            handle.remove()
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


def _vmap_fisher(net: nn.Module, x: Tensor, y: Tensor, names: Sequence[str], batch_size: int) -> dict:
    """:func:`empirical_fisher` for any net (e.g. a convolution's parameters): per-sample gradients
    with ``torch.func.vmap``, chunks of ``batch_size`` samples."""
    from torch.func import functional_call, grad, vmap

    params = dict(net.named_parameters())
    theta = {n: params[n].detach() for n in names}
    buffers = {n: b.detach() for n, b in net.named_buffers()}

    def nll(p: dict[str, Tensor], x1: Tensor, y1: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(net, (p, buffers), (x1.unsqueeze(0),)), y1.unsqueeze(0))

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    fisher = {n: torch.zeros_like(t) for n, t in theta.items()}
    device = params[names[0]].device
    was_training = net.training
    net.eval()
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            for n, g in per_sample_grad(theta, xb, yb).items():
                fisher[n] += g.pow(2).sum(0)
    finally:
        net.train(was_training)
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


class EWC(Anchored):
    """Online EWC penalty ``(λ/2) Σ F (θ − θ*)²``, ``lambda_`` = λ (>= 0, dimensionless multiplier of
    the Fisher term); ``decay`` is γ in ``F ← γ F + F_new`` (>= 0; 1 sums the Fishers). Each Fisher
    estimate uses at most ``fisher_samples`` samples, selected with ``seed``, in chunks of
    ``batch_size`` (memory only)."""

    name = "ewc"
    strength = "lambda_"
    stored = ("anchor", "fisher")

    def __init__(self, lambda_: float = 100.0, decay: float = 1.0, fisher_samples: int = 1000,
                 batch_size: int = 64, seed: int = 0) -> None:
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
        self.anchor = {}
        self.fisher_samples_used = 0  # per-sample gradients computed (cost accounting)

    def _weight(self, name: str, sq_dist: Tensor) -> Tensor:
        return self.fisher[name] * sq_dist

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        return self.fisher_samples_used * train_per_sample  # a forward and a backward per sample

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        reason = super().inactive_reason(has_pool, num_stages)
        if reason is None and num_stages == 1 and not has_pool:
            return "one training stage and no pretraining pool: the Fisher is 0 while it trains"
        return reason

    def _estimate(self, net: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(y), generator=gen)[: self.fisher_samples].to(y.device)
        self.fisher_samples_used += len(idx)
        return empirical_fisher(net, x[idx], y[idx], list(self.anchor), self.batch_size)

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        super().on_finetune_start(net, datamodule)
        if (pool := pretrain_pool(datamodule)) is not None:
            self.fisher = self._estimate(net, *pool)
        else:
            log.info("EWC: no pretraining pool, starting with F = 0")
            self.fisher = {n: torch.zeros_like(t) for n, t in self.anchor.items()}

    def on_stage_end(self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any) -> None:
        params = dict(net.named_parameters())
        self.anchor = {n: params[n].detach().clone() for n in self.anchor}  # the parameter set stays fixed
        new = self._estimate(net, *datamodule.task_data(list(classes)))
        self.fisher = {n: self.decay * self.fisher[n].to(new[n].device) + new[n] for n in new}
