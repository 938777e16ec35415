"""A small convolutional classifier (no BatchNorm, so its weights stay plain for arithmetic)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn


class CNN(nn.Module):
    """Convolutions of ``channels`` (``kernel_size`` square, zero ``padding``, ReLU, 2x2 max-pool each)
    → ReLU fully connected layers of ``hidden_dims`` → ``num_classes`` logits. The default is 28x28 →
    24x14x14 → 32x7x7 = 1568 → 50 → 10, 98,816 parameters (Fashion-MNIST's "two conv layers, under 100k
    parameters"; with 16 first-layer channels, or without padding, its baseline stayed below 90 % after
    the study's 5 pretraining epochs). ``forward`` views the ``[B, 784]`` rows as images; the entries of
    ``self.layers`` are named (``conv1``, ..., ``fc1``, ..., ``output``) for ``retention.trainable``."""

    def __init__(self, channels: Sequence[int] = (24, 32), kernel_size: int = 5, padding: int = 2,
                 hidden_dims: Sequence[int] = (50,), num_classes: int = 10, image_size: int = 28, in_channels: int = 1):
        super().__init__()
        self.in_channels, self.image_size, self.num_classes = int(in_channels), int(image_size), int(num_classes)
        blocks: list[tuple[str, nn.Module]] = []
        side, c_in = self.image_size, self.in_channels
        for i, c_out in enumerate(map(int, channels), start=1):
            side = (side + 2 * int(padding) - int(kernel_size) + 1) // 2
            if side < 1:
                raise ValueError(f"CNN: {len(channels)} convolutions of size {kernel_size} (padding {padding}) leave nothing "
                                 f"of a {image_size}x{image_size} image; use fewer channels entries or a smaller kernel_size")
            blocks += [(f"conv{i}", nn.Conv2d(c_in, c_out, int(kernel_size), padding=int(padding))), (f"relu_conv{i}", nn.ReLU()),
                       (f"pool{i}", nn.MaxPool2d(2))]
            c_in = c_out
        dims = [c_in * side * side, *map(int, hidden_dims)]
        blocks.append(("flatten", nn.Flatten()))
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:]), start=1):
            blocks += [(f"fc{i}", nn.Linear(d_in, d_out)), (f"relu_fc{i}", nn.ReLU())]
        blocks.append(("output", nn.Linear(dims[-1], self.num_classes)))
        self.layers = nn.Sequential(OrderedDict(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.reshape(-1, self.in_channels, self.image_size, self.image_size))
