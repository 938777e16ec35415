"""K networks of one architecture as one vmapped model (PyTorch's "model ensembling" recipe).

Each network keeps its own parameters (leaf tensors, so its optimizer state, its penalty and its
frozen layers stay its own); every forward stacks them along a new leading axis and runs the
architecture once under ``torch.vmap(torch.func.functional_call(...))``. The batch carries the same
axis: model ``k`` sees ``x[k]``. A lone network is a stack of one: the same code path, and on the
CPU model ``k``'s gradients are bit-identical whatever it is stacked with."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call


def architecture_key(net: nn.Module) -> tuple:
    """What must agree for two networks to share a stack: class, parameter names, shapes and dtypes."""
    return (type(net).__qualname__, *((n, tuple(p.shape), str(p.dtype)) for n, p in net.named_parameters()),
            *((n, tuple(b.shape), str(b.dtype)) for n, b in net.named_buffers()))


#: Layers a vmapped stack cannot run as each model alone would: random (dropout) or updating buffers in place (batch norm).
UNSTACKABLE = (nn.modules.dropout._DropoutNd, nn.modules.batchnorm._NormBase)


def unstackable_layers(net: nn.Module) -> list[str]:
    """Names (``type`` at ``path``) of the layers of ``net`` that :class:`StackedNets` cannot run."""
    return [f"{type(m).__name__} at {name or 'the top'}" for name, m in net.named_modules() if isinstance(m, UNSTACKABLE)]


class StackedNets(nn.Module):
    """``nets`` (K >= 1, one :func:`architecture_key`) as one model: ``forward(x [K, B, ...]) -> [K, B, C]``."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        if not nets:
            raise ValueError("StackedNets needs at least one network")
        keys = {architecture_key(net) for net in nets}
        if len(keys) != 1:
            raise ValueError(f"StackedNets: the networks differ in architecture ({len(keys)} kinds); stack like with like")
        self.nets = nn.ModuleList(nets)
        self.num_classes = int(nets[0].num_classes)
        # The architecture without storage: functional_call fills in the stacked tensors.
        self._skeleton = [copy.deepcopy(nets[0]).to("meta")]  # a list: not a submodule, not in state_dict

    def __len__(self) -> int:
        return len(self.nets)

    def stacked_tensors(self) -> dict[str, torch.Tensor]:
        """Every parameter and buffer name -> the K models' tensors stacked on a new axis 0 (with autograd)."""
        named = [dict(net.named_parameters()) | dict(net.named_buffers()) for net in self.nets]
        return {name: torch.stack([tensors[name] for tensors in named]) for name in named[0]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skeleton = self._skeleton[0]
        skeleton.train(self.training)

        def one(tensors: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(skeleton, tensors, (xb,))

        return torch.vmap(one)(self.stacked_tensors(), x)
