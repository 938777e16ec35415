"""Online Elastic Weight Consolidation (Kirkpatrick et al. 2017; Schwarz et al. 2018).

Fisher, ``fisher=`` (diagonal, from per-sample gradients, net in eval mode), units (nats / parameter
unit)²: ``sampled`` (default), Kirkpatrick et al.'s (PNAS 114(13)) ``F_k = mean_n E_{ŷ ~ p(· | x_n;
θ)} (∂ log p(ŷ | x_n; θ) / ∂θ_k)²``, with one label ``ŷ_n`` drawn per sample (a seeded generator;
the global RNG is untouched); ``empirical``, the gradients at the TRUE labels (Kunstner et al. 2019).
``normalize=true`` (default) divides each estimate by its mean entry, so that ``F`` averages 1 and
λ reads on the scale of L2-SP's α; what EWC adds is how that weight is spread over the parameters.

``damping`` (ε >= 0, default 0: the published penalty) adds ε to every weight. A parameter that no
estimated image moves has ``F_k = 0``, and fine-tuning can escape through it unpenalised at any λ
(in this study some seeds lost 20-37 pp of retained accuracy at every λ up to 1e5 that way); ε
bounds that path like L2-SP with α = λε.

At ``on_finetune_start`` the Fisher is estimated on a seeded subset of at most ``fisher_samples``
samples of the pretraining pool (no pool: ``F = 0`` until the first stage ends); online, at the
start of each stage after the first, ``F ← decay · F + F_stage`` is estimated on the previous
stage's task data with the net as that stage left it, whose end set the anchor ``θ* ← θ``.

Penalty (with the factor 1/2 of Kirkpatrick et al.): ``(λ / 2) · Σ_k (F_k + ε) · (θ_k − θ*_k)²``
over the trainable floating-point parameters present at ``on_finetune_start``; 0 at ``θ = θ*``, > 0
away from it wherever ``F_k + ε > 0``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seqft_lightning.evaluation import eval_mode
from seqft_lightning.retention.base import Anchored, pretrain_pool

log = logging.getLogger(__name__)


FISHER_KINDS = ("sampled", "empirical")


@torch.no_grad()
def sample_labels(net: nn.Module, x: Tensor, generator: torch.Generator, batch_size: int = 1000) -> Tensor:
    """One label per sample drawn from the net's predictive distribution ``p(· | x)`` (eval mode),
    with ``generator`` (a CPU generator: the draw does not depend on the device)."""
    device = next(net.parameters()).device
    with eval_mode(net):
        probs = torch.cat([F.softmax(net(x[i:i + batch_size].to(device)), dim=-1).double().cpu()
                           for i in range(0, len(x), batch_size)])
    return torch.multinomial(probs, 1, generator=generator).flatten().to(x.device)


def empirical_fisher(net: nn.Module, x: Tensor, y: Tensor, names: Sequence[str], batch_size: int = 64) -> dict:
    """Diagonal empirical Fisher ``mean_n g_n²`` of ``log p(y_n | x_n)`` w.r.t. the parameters ``names``,
    shaped like them, on their device, in chunks of ``batch_size`` samples (memory only); ``.grad`` is
    not touched.

    When every one belongs to an ``nn.Linear``: a Linear weight's per-sample gradient is ``δ_n a_nᵀ``
    (error at its output, its input), so ``Σ_n (δ_n a_nᵀ)² = (δ²)ᵀ (a²)`` and the bias's is ``Σ_n δ_n²``:
    two matmuls per layer per chunk, with ``δ_n`` from one backward pass of the *summed* loss. Any
    other net (a convolution): per-sample gradients with ``torch.func.vmap``."""
    if not names:
        return {}
    params = dict(net.named_parameters())
    owners = {n: (net.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in names}
    linear = all(isinstance(module, nn.Linear) for module, _ in owners.values())
    squared_grads = _linear_squared_grads(net, owners) if linear else _vmap_squared_grads(net, names)
    fisher = {n: torch.zeros_like(params[n]) for n in names}
    device = params[names[0]].device
    with eval_mode(net):
        for start in range(0, len(y), batch_size):
            for n, g2 in squared_grads(x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)).items():
                fisher[n] += g2
    return {n: f / max(len(y), 1) for n, f in fisher.items()}


def _linear_squared_grads(net: nn.Module, owners: dict) -> Callable[[Tensor, Tensor], dict]:
    """``Σ_n g_n²`` over a chunk, per parameter of ``owners`` (name -> (Linear, "weight" | "bias"))."""
    layers = list(dict.fromkeys(module for module, _ in owners.values()))

    def chunk(xb: Tensor, yb: Tensor) -> dict:
        inputs, outputs = {}, {}

        def keep(module: nn.Module, args: tuple, out: Tensor) -> None:
            inputs[module], outputs[module] = args[0].detach(), out

        handles = [module.register_forward_hook(keep) for module in layers]
        try:
            with torch.enable_grad():
                loss = F.cross_entropy(net(xb), yb, reduction="sum")  # = Σ −log p(y|x); same squares
                errors = torch.autograd.grad(loss, [outputs[module] for module in layers])
        finally:
            for handle in handles:
                handle.remove()
        d2 = {module: e.pow(2) for module, e in zip(layers, errors)}
        return {n: d2[m].T @ inputs[m].pow(2) if kind == "weight" else d2[m].sum(0) for n, (m, kind) in owners.items()}

    return chunk


def _vmap_squared_grads(net: nn.Module, names: Sequence[str]) -> Callable[[Tensor, Tensor], dict]:
    """``Σ_n g_n²`` over a chunk, per parameter ``names``, from ``torch.func`` per-sample gradients."""
    from torch.func import functional_call, grad, vmap

    theta = {n: p.detach() for n, p in net.named_parameters() if n in names}
    buffers = {n: b.detach() for n, b in net.named_buffers()}

    def nll(p: dict[str, Tensor], x1: Tensor, y1: Tensor) -> Tensor:
        return F.cross_entropy(functional_call(net, (p, buffers), (x1.unsqueeze(0),)), y1.unsqueeze(0))

    per_sample_grad = vmap(grad(nll), in_dims=(None, 0, 0))
    return lambda xb, yb: {n: g.pow(2).sum(0) for n, g in per_sample_grad(theta, xb, yb).items()}


class EWC(Anchored):
    """Online EWC penalty ``(λ/2) Σ (F + ε) (θ − θ*)²`` (module doc): ``lambda_`` = λ, ``decay`` = γ in
    ``F ← γ F + F_new``, ``damping`` = ε (each >= 0); each estimate uses at most ``fisher_samples``
    samples, drawn (and labelled) with ``seed``, in chunks of ``batch_size`` (memory only)."""

    name = "ewc"
    strength = "lambda_"
    stored = ("anchor", "fisher")

    def __init__(self, lambda_: float = 100.0, decay: float = 1.0, fisher_samples: int = 1000,
                 batch_size: int = 64, seed: int = 0, fisher: str = "sampled", normalize: bool = True,
                 damping: float = 0.0) -> None:
        if lambda_ < 0 or decay < 0 or damping < 0:
            raise ValueError(f"lambda_, decay and damping must be >= 0, got {lambda_}, {decay}, {damping}")
        if fisher_samples < 1 or batch_size < 1:
            raise ValueError(f"fisher_samples and batch_size must be >= 1, got {fisher_samples}, {batch_size}")
        if fisher not in FISHER_KINDS:
            raise ValueError(f"fisher={fisher!r} is unknown; choose one of {list(FISHER_KINDS)}")
        self.lambda_, self.decay, self.damping = float(lambda_), float(decay), float(damping)
        self.fisher_samples, self.batch_size, self.seed = int(fisher_samples), int(batch_size), int(seed)
        self.fisher_kind, self.normalize = str(fisher), bool(normalize)  # `fisher` holds the estimate
        self.fisher: dict[str, Tensor] = {}
        self.anchor = {}
        self.fisher_samples_used = 0  # per-sample gradients computed (cost accounting)
        self.label_draws = 0  # forwards that drew a label from the model (sampled Fisher)
        self._estimates = 0  # estimates so far: each draws with its own generator
        self._pending: tuple[Tensor, Tensor] | None = None  # the finished stage's task data

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "fisher": self.fisher_kind}

    def _weight(self, flat: dict[str, Tensor], sq_dist: Tensor) -> Tensor:
        weight = flat["fisher"] * sq_dist
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
