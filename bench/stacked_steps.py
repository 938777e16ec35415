"""How fast can K models of the study's MLP train in lockstep on this machine, and which stacking keeps a model's
bits whatever it is stacked with? (Groundwork of issue 19.)

``python bench/stacked_steps.py [--ks 1 5 25] [--steps 200] [--threads 1] [--device cuda]``

Runs ``--steps`` Adam steps (torch's fused Adam, as the study's optimizer config) at batch 64 (cross-entropy,
784-128-64-10 MLP, random data held in memory, batches drawn by index, each model its own batches) in three ways and
prints optimizer steps per second *per model*:

* ``module``: one ``nn.Module`` and one Adam, stepped K times (what K separate jobs do, without their process, Hydra
  and Lightning overhead);
* ``state``: the K models' parameters stacked once (``torch.func.stack_module_state``) into ``[K, ...]`` leaf
  tensors, loss and gradients of all K in one ``vmap(functional_call)``, one Adam over the stacked tensors;
* ``members``: each model keeps its own parameters (the optimizer's leaves, with their own Adam state); every step
  stacks them (``torch.stack``, differentiable) and runs the same ``vmap``.

For ``state`` and ``members`` it then checks the premise of "one result per config": after all the steps, are model
0's parameters in a stack of K bit-identical to its parameters in a stack of one? (``same`` / ``DIFFERENT``.) Adam
is elementwise, but a kernel over one ``[K, n]`` tensor handles its last elements (those past a multiple of the
vector width) in another code path than a kernel over ``[n]`` does, so ``state`` can round a model's last bias
entries differently; ``members`` steps every model's tensors exactly as a stack of one does. Timings are wall
clock and noisy on a shared machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import copy
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from seqft_lightning.models.components import MLP

BATCH, N_SAMPLES = 64, 4096


def make_models(k: int, device: str = "cpu") -> list[nn.Module]:
    """K MLPs on ``device``, model i initialised from seed i (so model 0 is the same in every stack)."""
    models = []
    for i in range(k):
        torch.manual_seed(i)
        models.append(MLP().to(device))
    return models


def module_steps(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
    """Each model on its own, one after another; ``idx`` is [steps, K, BATCH]. Returns model 0's parameters."""
    for i, model in enumerate(models):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
        for rows in idx[:, i]:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            opt.step()
    return [p.detach() for p in models[0].parameters()]


def vmapped_loss(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> Callable:
    """``loss(params, rows)``: the sum over the stack of each model's mean cross-entropy on its rows ([K, B]); the
    gradient of the sum with respect to one model's parameters is that of its own loss."""
    base = copy.deepcopy(models[0]).to("meta")
    logits = vmap(lambda p, inputs: functional_call(base, p, (inputs,)))
    return lambda params, rows: vmap(nn.functional.cross_entropy)(logits(params, x[rows]), y[rows]).sum()


def state_steps(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
    """One Adam over the stacked ``[K, ...]`` tensors. Returns model 0's parameters."""
    stacked, _ = stack_module_state(models)
    loss, params = vmapped_loss(models, x, y), {n: nn.Parameter(p) for n, p in stacked.items()}
    opt = torch.optim.Adam(list(params.values()), lr=1e-3, fused=True)
    for rows in idx:
        opt.zero_grad(set_to_none=True)
        loss(params, rows).backward()
        opt.step()
    return [p.detach()[0] for p in params.values()]


def member_steps(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> list[torch.Tensor]:
    """One Adam over every model's own parameters, stacked anew in each step. Returns model 0's parameters."""
    loss, names = vmapped_loss(models, x, y), [n for n, _ in models[0].named_parameters()]
    opt = torch.optim.Adam([p for m in models for p in m.parameters()], lr=1e-3, fused=True)
    for rows in idx:
        opt.zero_grad(set_to_none=True)
        members = [dict(m.named_parameters()) for m in models]
        loss({n: torch.stack([m[n] for m in members]) for n in names}, rows).backward()
        opt.step()
    return [p.detach() for p in models[0].parameters()]


def rate(fn: Callable, models: list[nn.Module], x: torch.Tensor, y: torch.Tensor,
         idx: torch.Tensor) -> tuple[float, list[torch.Tensor]]:
    """``(steps per second per model, model 0's parameters)`` of ``fn`` on fresh copies of ``models`` (on a GPU
    the clock stops once its queued kernels are done)."""
    fn(copy.deepcopy(models), x, y, idx[:3])  # warm-up: first calls allocate
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    params = fn(copy.deepcopy(models), x, y, idx)
    sync()
    return idx.shape[0] * idx.shape[1] / (time.perf_counter() - start) / len(models), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 25])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="where the models train, e.g. cuda (data held there too)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen, device = torch.Generator().manual_seed(0), args.device
    x, y = torch.rand(N_SAMPLES, 784, generator=gen), torch.randint(0, 10, (N_SAMPLES,), generator=gen)
    idx = torch.randint(0, N_SAMPLES, (args.steps, max(args.ks), BATCH), generator=gen)
    x, y, idx = x.to(device), y.to(device), idx.to(device)
    where = torch.cuda.get_device_name(device) if x.is_cuda else f"cpu, {args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, batch {BATCH}, {args.steps} fused-Adam steps per model")
    print(f"{'K':>4} {'module':>8} {'state':>8} {'members':>8}  (steps/s/model)  model 0 after the steps vs K=1")
    alone = {}
    for k in args.ks:
        models = make_models(k, device)
        module, _ = rate(module_steps, models, x, y, idx[:, :k])
        (state, state_p), (member, member_p) = (rate(fn, models, x, y, idx[:, :k]) for fn in (state_steps, member_steps))
        alone = alone or ({"state": state_p, "members": member_p} if k == 1 else
                          {"state": state_steps(make_models(1, device), x, y, idx[:, :1]),
                           "members": member_steps(make_models(1, device), x, y, idx[:, :1])})
        same = {name: "same" if all(map(torch.equal, got, alone[name])) else "DIFFERENT"
                for name, got in (("state", state_p), ("members", member_p))}
        print(f"{k:>4} {module:>8.0f} {state:>8.0f} {member:>8.0f}  state {same['state']}, members {same['members']}")


if __name__ == "__main__":
    main()
