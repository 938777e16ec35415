"""Freeze all parameters except selected layers. ``trainable`` entries: ``"output"`` (the last layer
with weights of ``net.layers``); an int (or digit string) ``k``, the k-th layer with weights of
``net.layers`` (negative from the end; the CNN counts ``conv1, conv2, fc1, output``); the name of an
entry of ``net.layers`` (the CNN's ``"fc1"``); any other string, a parameter-name prefix
(``"layers.4.bias"``). Every other parameter gets ``requires_grad = False`` and ``grad = None``: Adam
skips it, so with ``weight_decay = 0`` it stays bit-identical. The freeze is never undone."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from torch import nn

from seqft_lightning.retention.base import Retention

log = logging.getLogger(__name__)

# Layers with weights that ``"output"`` and a layer index count (the MLP has Linear layers only).
WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def resolve_trainable(net: nn.Module, trainable: Sequence[str | int]) -> set[str]:
    """Names of the parameters of ``net`` selected by ``trainable`` entries."""
    all_names = [n for n, _ in net.named_parameters()]
    layers = [n for n, m in net.named_modules() if n.split(".")[0] == "layers" and isinstance(m, WEIGHT_LAYERS)]
    selected: set[str] = set()
    for entry in trainable:
        if entry == "output" and layers:
            prefix = layers[-1]
        elif isinstance(entry, int) or (isinstance(entry, str) and entry.lstrip("-").isdigit()):
            if not -len(layers) <= int(entry) < len(layers):
                raise ValueError(f"Freeze: layer index {entry} is out of range: the model has {len(layers)} layers with "
                                 f"weights in net.layers (indices {-len(layers)}..{len(layers) - 1}); fix retention.trainable")
            prefix = layers[int(entry)]
        else:
            prefix = f"layers.{entry}" if f"layers.{entry}" in layers else str(entry)
        if not (hits := [n for n in all_names if n == prefix or n.startswith(prefix + ".")]):
            raise ValueError(f"Freeze: unknown trainable entry {entry!r}; use 'output', a layer index "
                             f"0..{len(layers) - 1}, or a parameter-name prefix of {all_names}")
        selected.update(hits)
    return selected


class Freeze(Retention):
    """Train only the layers named by the ``trainable`` entries (see module doc); freeze the rest."""

    name = "freeze"

    def __init__(self, trainable: Iterable[str | int] | str | int = ("output",)) -> None:
        # tuple() also converts a Hydra ListConfig
        self.trainable = (trainable,) if isinstance(trainable, (str, int)) else tuple(trainable)
        if not self.trainable:
            raise ValueError("Freeze: trainable must name at least one layer")

    def check_model(self, net: nn.Module) -> None:
        resolve_trainable(net, self.trainable)

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        keep = resolve_trainable(net, self.trainable)
        frozen = {n: p for n, p in net.named_parameters() if n not in keep}
        for p in frozen.values():
            p.requires_grad_(False)
            p.grad = None  # a stale grad would make Adam update the weight
        log.info("freeze: training %s, frozen %s", sorted(keep), list(frozen))
