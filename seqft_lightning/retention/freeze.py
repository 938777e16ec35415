"""Freeze all parameters except selected layers.

``trainable`` entries select what keeps training:

* ``"output"``: the last ``nn.Linear`` of ``net.layers``;
* an int (or digit string) ``k``: the k-th ``nn.Linear`` of ``net.layers``
  (0-based, negative counts from the end);
* any other string: a parameter-name prefix on a dot boundary, e.g.
  ``"layers.0"`` or ``"layers.4.bias"``.

Unknown entries raise a one-line ``ValueError``.

In ``on_stage_start`` every other parameter gets ``requires_grad = False`` and
``grad = None``.  The optimizer may receive all parameters: Adam skips those whose
``grad`` is ``None``, so with ``weight_decay = 0`` frozen weights stay
bit-identical.  Design choice: the freeze is kept for all later stages and is not
undone at ``on_stage_end`` (the net stays frozen after fine-tuning).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from torch import nn

from seqft_lightning.retention.base import Retention

log = logging.getLogger(__name__)

__all__ = ["Freeze", "resolve_trainable"]


def _linear_prefixes(net: nn.Module) -> list[str]:
    """Parameter-name prefixes of the ``nn.Linear`` modules in ``net.layers``, in order."""
    layers = getattr(net, "layers", None)
    if not isinstance(layers, nn.Module):
        return []
    names = {id(m): n for n, m in net.named_modules()}
    return [names[id(m)] for m in layers.modules() if isinstance(m, nn.Linear)]


def resolve_trainable(net: nn.Module, trainable: Sequence[str | int]) -> set[str]:
    """Names of the parameters of ``net`` selected by ``trainable`` entries."""
    all_names = [n for n, _ in net.named_parameters()]
    linears = _linear_prefixes(net)
    selected: set[str] = set()
    for entry in trainable:
        if entry == "output" and linears:
            prefix = linears[-1]
        elif isinstance(entry, int) or (isinstance(entry, str) and entry.lstrip("-").isdigit()):
            k = int(entry)
            if not -len(linears) <= k < len(linears):
                raise ValueError(
                    f"Freeze: Linear index {k} out of range for {len(linears)} Linear layers in net.layers"
                )
            prefix = linears[k]
        else:
            prefix = str(entry)
        hits = [n for n in all_names if n == prefix or n.startswith(prefix + ".")]
        if not hits:
            raise ValueError(
                f"Freeze: unknown trainable entry {entry!r}; use 'output', a Linear index "
                f"0..{len(linears) - 1}, or a parameter-name prefix of {all_names}"
            )
        selected.update(hits)
    return selected


class Freeze(Retention):
    """Train only the selected layers; everything else is frozen for good.

    Args:
        trainable: entries naming the layers that keep training (see module doc).
    """

    name = "freeze"

    def __init__(self, trainable: Iterable[str | int] | str | int = ("output",)) -> None:
        if isinstance(trainable, (str, int)):
            trainable = (trainable,)
        self.trainable: tuple[str | int, ...] = tuple(trainable)  # also converts Hydra ListConfig
        if not self.trainable:
            raise ValueError("Freeze: trainable must name at least one layer")

    def settings(self) -> dict[str, Any]:
        return {"trainable": list(self.trainable)}

    def on_stage_start(self, net: nn.Module, stage: int, classes: Sequence[int]) -> None:
        keep = resolve_trainable(net, self.trainable)
        frozen = []
        for n, p in net.named_parameters():
            if n not in keep:
                p.requires_grad_(False)
                p.grad = None  # a stale grad would make Adam update the weight
                frozen.append(n)
        log.info("freeze: training %s, frozen %s", sorted(keep), frozen)
