"""How fast can K models of the study's MLP train in lockstep on this machine? (Groundwork of issue 19.)

``python bench/stacked_steps.py [--ks 1 5 25] [--steps 200] [--threads 1]``

Times Adam steps at batch 64 (cross-entropy, 784-128-64-10 MLP, random data held in memory, batches drawn by
index) in two ways and prints optimizer steps per second *per model*:

* ``module``: one ``nn.Module`` and ``torch.optim.Adam``, stepped K times (what K separate jobs do, without their
  process, Hydra and Lightning overhead: an upper bound for today's per-job path);
* ``stacked``: the K models' parameters stacked (``torch.func.stack_module_state``), loss and gradients of all K
  in one ``vmap(grad(functional_call))``, one Adam over the stacked tensors (Adam is elementwise, so this is K
  independent Adams), each model with its own batches.

It also checks the premise of "one result per config": model 0's gradients in a stack of K equal, bit for bit,
its gradients in a stack of 1 (printed as ``bit-identical to K=1``). Timings are wall clock and noisy on a shared
machine: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from seqft_lightning.models.components import MLP

BATCH, N_SAMPLES = 64, 4096


def make_models(k: int) -> list[nn.Module]:
    models = []
    for i in range(k):
        torch.manual_seed(i)
        models.append(MLP())
    return models


def module_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
    """Adam steps of one module over the batches ``idx`` ([steps, BATCH] row indices)."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for rows in idx:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
        opt.step()


def stacked_grads(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor):
    """``(params, grad_fn)``: the stacked parameters and a function of ([K, B] rows) -> their stacked gradients."""
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")

    def loss(p, rows):
        return nn.functional.cross_entropy(functional_call(base, p, (x[rows],)), y[rows])

    return params, vmap(grad(loss))


def stacked_steps(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> None:
    """Adam steps of the K stacked models; ``idx`` is [steps, K, BATCH]: each model its own batches."""
    params, grads = stacked_grads(models, x, y)
    opt = torch.optim.Adam(list(params.values()), lr=1e-3)
    for rows in idx:
        for p, g in zip(params.values(), grads(params, rows).values()):
            p.grad = g
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 5, 25])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(N_SAMPLES, 784, generator=gen), torch.randint(0, 10, (N_SAMPLES,), generator=gen)
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {BATCH}, {args.steps} steps per model")
    print(f"{'K':>4} {'module steps/s/model':>21} {'stacked steps/s/model':>22} {'ratio':>6}  gradients")
    one = stacked_grads(make_models(1), x, y)
    rows0 = torch.randint(0, N_SAMPLES, (1, BATCH), generator=gen)
    ref = one[1](one[0], rows0)
    for k in args.ks:
        idx = torch.randint(0, N_SAMPLES, (args.steps, k, BATCH), generator=gen)
        models = make_models(k)
        module_steps(copy.deepcopy(models[0]), x, y, idx[:3, 0])  # warm-up: first calls allocate and compile
        stacked_steps(copy.deepcopy(models), x, y, idx[:3])
        start = time.perf_counter()
        for i, model in enumerate(copy.deepcopy(models)):
            module_steps(model, x, y, idx[:, i])
        module_rate = args.steps * k / (time.perf_counter() - start) / k
        start = time.perf_counter()
        stacked_steps(copy.deepcopy(models), x, y, idx)
        stacked_rate = args.steps * k / (time.perf_counter() - start) / k
        params, grads = stacked_grads(models, x, y)
        got = grads(params, torch.cat([rows0, idx[0, 1:]]))
        same = all(torch.equal(got[n][0], ref[n][0]) for n in ref)
        print(f"{k:>4} {module_rate:>21.0f} {stacked_rate:>22.0f} {stacked_rate / module_rate:>6.2f}  "
              f"{'bit-identical' if same else 'DIFFERENT'} to K=1")


if __name__ == "__main__":
    main()
