"""A plain fully connected classifier (no BatchNorm, so its weights stay plain for arithmetic)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``input_dim`` → ReLU hidden layers of ``hidden_dims`` → ``num_classes`` logits; inputs ``[B, ...]``
    are flattened. The Linear layers sit in ``self.layers`` (an ``nn.Sequential``), the output layer last."""

    def __init__(self, input_dim: int = 784, hidden_dims: Sequence[int] = (128, 64), num_classes: int = 10):
        super().__init__()
        dims = [int(input_dim), *map(int, hidden_dims)]
        blocks: list[nn.Module] = []
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(d_in, d_out), nn.ReLU()]
        blocks.append(nn.Linear(dims[-1], int(num_classes)))
        self.layers = nn.Sequential(*blocks)
        self.num_classes = int(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))
