"""Online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

Fisher, ``fisher=`` (diagonal, from per-sample gradients, net in eval mode):

* ``sampled`` (default): the Fisher information as Kirkpatrick et al. (2017, PNAS 114(13)) define it,
  ``F_k = mean_n E_{ŷ ~ p(· | x_n; θ)} (∂ log p(ŷ | x_n; θ) / ∂θ_k)²``, the expectation over the
  model's own predictive distribution estimated with one label ``ŷ_n`` drawn per sample (a seeded
  generator; the global RNG is untouched);
* ``empirical``: the gradients at the TRUE labels ``y_n`` ("empirical Fisher"; Kunstner et al. 2019
  discuss how it differs).

Units (nats / parameter unit)². ``normalize=true`` (default) divides each estimate by its mean
entry, so that the weights ``F`` average 1 over the parameters and λ reads on the scale of L2-SP's
α: ``λ = 1`` costs as much per unit of squared distance, on average, as ``α = 1`` does; what EWC adds
is how that weight is spread over the parameters.

``damping`` (ε >= 0, default 0: the published penalty) adds ε to every weight: ``(λ/2) Σ (F_k + ε)
(θ_k − θ*_k)²``. A parameter that no estimated image moves (a hidden unit silent on every one of
them) has ``F_k = 0``, and fine-tuning can then escape through it unpenalised at any λ: in this
study some seeds lost 20-37 pp of retained accuracy at every λ up to 1e5 that way. ε bounds that
path like L2-SP with α = λε.

At ``on_finetune_start`` the Fisher is estimated on a seeded random subset of at most
``fisher_samples`` samples of the pretraining pool (no pool: ``F = 0``, no penalty until the first
stage ends); online, after each stage but the last, ``F ← decay · F + F_stage`` is estimated on
that stage's task data with the net as the stage left it (at the next stage's start: after the
last stage nothing would use it), and the anchor ``θ* ← θ`` is taken at the stage's end.

Penalty (with the factor 1/2 of Kirkpatrick et al.): ``(λ / 2) · Σ_k F_k · (θ_k − θ*_k)²`` over the
trainable floating-point parameters present at ``on_finetune_start``; 0 at ``θ = θ*``, > 0 away from
it wherever ``F > 0``.
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


FISHER_KINDS = ("sampled", "empirical")


@torch.no_grad()
def sample_labels(net: nn.Module, x: Tensor, generator: torch.Generator, batch_size: int = 1000) -> Tensor:
    """One label per sample drawn from the net's predictive distribution ``p(· | x)`` (eval mode),
    with ``generator`` (a CPU generator: the draw does not depend on the device)."""
    was_training = net.training
    net.eval()
    try:
        device = next(net.parameters()).device
        probs = torch.cat([F.softmax(net(x[i:i + batch_size].to(device)), dim=-1).double().cpu()
                           for i in range(0, len(x), batch_size)])
    finally:
        net.train(was_training)
    return torch.multinomial(probs, 1, generator=generator).flatten().to(x.device)


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
    the Fisher term; with ``normalize`` on L2-SP's scale); ``decay`` is γ in ``F ← γ F + F_new`` (>= 0;
    1 sums the Fishers); ``fisher`` is ``sampled`` (Kirkpatrick et al.) or ``empirical`` (see the
    module docstring). Each Fisher estimate uses at most ``fisher_samples`` samples, selected (and,
    ``sampled``, labelled) with ``seed``, in chunks of ``batch_size`` (memory only)."""

    name = "ewc"
    strength = "lambda_"
    stored = ("anchor", "fisher")

    def __init__(self, lambda_: float = 100.0, decay: float = 1.0, fisher_samples: int = 1000,
                 batch_size: int = 64, seed: int = 0, fisher: str = "sampled", normalize: bool = True,
                 damping: float = 0.0) -> None:
        if lambda_ < 0 or decay < 0:
            raise ValueError(f"lambda_ and decay must be >= 0, got {lambda_}, {decay}")
        if fisher_samples < 1 or batch_size < 1:
            raise ValueError(f"fisher_samples and batch_size must be >= 1, got {fisher_samples}, {batch_size}")
        if damping < 0:
            raise ValueError(f"damping must be >= 0, got {damping}")
        if fisher not in FISHER_KINDS:
            raise ValueError(f"fisher={fisher!r} is unknown; choose one of {list(FISHER_KINDS)}")
        self.lambda_ = float(lambda_)
        self.decay = float(decay)
        self.fisher_samples = int(fisher_samples)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.fisher_kind = str(fisher)
        self.normalize = bool(normalize)
        self.damping = float(damping)
        self.fisher: dict[str, Tensor] = {}
        self.anchor = {}
        self.fisher_samples_used = 0  # per-sample gradients computed (cost accounting)
        self.label_draws = 0  # forwards that drew a label from the model (sampled Fisher)
        self._estimates = 0  # estimates so far: each draws with its own generator
        self._pending: tuple[Tensor, Tensor] | None = None  # the finished stage's task data

    def settings(self) -> dict[str, Any]:
        # the `fisher` argument is stored as `fisher_kind` (`fisher` holds the estimate)
        values = super().settings()
        values["fisher"] = self.fisher_kind
        return values

    def _weight(self, name: str, sq_dist: Tensor) -> Tensor:
        weight = self.fisher[name] * sq_dist
        return weight + self.damping * sq_dist if self.damping else weight

    def extra_flops(self, forward_per_sample: float, train_per_sample: float) -> float:
        # a forward and a backward per per-sample gradient, plus the forwards that drew labels
        return self.fisher_samples_used * train_per_sample + self.label_draws * forward_per_sample

    def inactive_reason(self, has_pool: bool, num_stages: int) -> str | None:
        reason = super().inactive_reason(has_pool, num_stages)
        if reason is None and num_stages == 1 and not has_pool:
            return "one training stage and no pretraining pool: the Fisher is 0 while it trains"
        return reason

    def _estimate(self, net: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        gen = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(len(y), generator=gen)[: self.fisher_samples].to(y.device)
        x, y = x[idx], y[idx]
        self.fisher_samples_used += len(idx)
        if self.fisher_kind == "sampled":
            # its own stream per estimate, so the pretraining pool's and each stage's draws differ
            y = sample_labels(net, x, torch.Generator().manual_seed(self.seed * 1000 + self._estimates))
            self.label_draws += len(idx)
        self._estimates += 1
        fisher = empirical_fisher(net, x, y, list(self.anchor), self.batch_size)
        if self.normalize and fisher:
            mean = torch.cat([f.flatten() for f in fisher.values()]).mean()
            if mean > 0:
                fisher = {n: f / mean for n, f in fisher.items()}
        return fisher

    def on_finetune_start(self, net: nn.Module, datamodule: Any) -> None:
        super().on_finetune_start(net, datamodule)
        self._pending, self._estimates = None, 0
        if (pool := pretrain_pool(datamodule)) is not None:
            self.fisher = self._estimate(net, *pool)
        else:
            log.info("EWC: no pretraining pool, starting with F = 0")
            self.fisher = {n: torch.zeros_like(t) for n, t in self.anchor.items()}

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        if self._pending is None:
            return
        new = self._estimate(net, *self._pending)  # the net is still as the previous stage left it
        self._pending = None
        self.fisher = {n: self.decay * self.fisher[n].to(new[n].device) + new[n] for n in new}

    def on_stage_end(self, net: nn.Module, stage: int, classes: Sequence[int], datamodule: Any) -> None:
        params = dict(net.named_parameters())
        self.anchor = {n: params[n].detach().clone() for n in self.anchor}  # the parameter set stays fixed
        self._pending = datamodule.task_data(list(classes))
