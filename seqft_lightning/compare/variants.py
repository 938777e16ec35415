"""Pure labelling of method variants (nothing here touches the file system).

A *variant* is a group of jobs whose configs are equal once the seeds (:func:`is_seed_key`) and the keys that do not
affect results (:func:`seqft_lightning.contract.affects_results`) are removed. Its label is
``method.name[+<retention>] [key=value ...]``, listing the leaves that differ between jobs of that method and
retention. A *knob grid* (:func:`knob_grids`): variants of one method and retention method that differ only in one
retention knob (``retention.lambda_``, ...); compare picks a point per seed on calibration and reports it as the
*tuned* variant ``method+retention (tuned)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seqft_lightning.contract import NO_RETENTION, affects_results, flatten, is_seed_key, retention_name

NAIVE_METHODS = ("baseline", "joint", "sequential")  # report order: naive (and their retention variants), merging
MERGING_METHODS = ("task_arithmetic", "ties", "dare", "average", "task_negation")
FAMILIES = ("naive", "retention", "merging")


def variant_family(method: str, retention: str) -> str:
    """``"merging"`` (merging and negation methods), else ``"retention"`` (a retention method on), else ``"naive"``."""
    return "merging" if method in MERGING_METHODS else "naive" if retention == NO_RETENTION else "retention"


def is_knob_key(key: str) -> bool:
    """A retention setting a sweep may tune: any ``retention.*`` leaf but the class and the seeds."""
    return key.startswith("retention.") and key != "retention._target_" and not is_seed_key(key)


def variant_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config without the seeds and the keys that do not affect results."""
    return {k: v for k, v in flatten(cfg).items() if not is_seed_key(k) and affects_results(k)}


def method_name(cfg: Mapping[str, Any]) -> str:
    """``method.name`` of a config (``"unknown"`` when absent)."""
    return str(cfg.get("method", {}).get("name") or "unknown")


def format_value(value: Any) -> str:
    """Compact, deterministic text for a config leaf (lists as ``[[3],[4],[7]]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _freeze(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _differing(flats: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keys whose value, or presence, is not the same in all of ``flats``, sorted."""
    return sorted(k for k in {k for f in flats for k in f} if len({(k in f, _freeze(f.get(k))) for f in flats}) > 1)


def variant_labels(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Variant label of each config, aligned with ``configs``: equal configs (seeds etc. removed) get equal labels,
    others different ones (a ``#2`` suffix is the last resort against a clash)."""
    flats, heads = [variant_config(c) for c in configs], [(method_name(c), retention_name(c)) for c in configs]
    differing = {h: _differing([f for f, g in zip(flats, heads) if g == h]) for h in set(heads)}
    label_of: dict[str, str] = {}  # frozen config -> label
    for flat, (method, retention) in zip(flats, heads):
        if _freeze(flat) not in label_of:
            base = " ".join([method if retention == NO_RETENTION else f"{method}+{retention}",
                             *(f"{k}={format_value(flat[k])}" for k in differing[(method, retention)] if k in flat)])
            label, i = base, 2
            while label in label_of.values():
                label, i = f"{base} #{i}", i + 1
            label_of[_freeze(flat)] = label
    return [label_of[_freeze(flat)] for flat in flats]


def knob_sort_key(value: Any) -> tuple:
    """Candidate order of knob values: numbers ascending; lists (``retention.trainable``) by length, so fewer
    trainable layers come first; anything else by its text."""
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    return (2, len(value), format_value(value)) if isinstance(value, (list, tuple)) else (3, 0, format_value(value))


@dataclass(frozen=True)
class KnobGrid:
    """Variants of one ``method``+``retention`` that differ only in ``key``: ``points`` are ``((value, variant
    label), ...)`` in candidate order (:func:`knob_sort_key`); ``label`` is the tuned label."""

    label: str
    method: str
    retention: str
    key: str
    points: tuple[tuple[Any, str], ...]
    values = property(lambda self: [v for v, _ in self.points])
    variants = property(lambda self: [label for _, label in self.points])


def knob_grids(configs: Mapping[str, Mapping[str, Any]]) -> list[KnobGrid]:
    """Knob grids among ``{variant label: a job's config}``: per method, retention method (not ``none``) and knob
    key, the variants equal but for that key that hold at least two values of it. The tuned label is
    ``method+retention [key=value ...] (tuned)`` with the keys that tell grids of one method and retention apart
    (and ``over <key>`` when it has grids over several knobs)."""
    flats = {label: variant_config(cfg) for label, cfg in configs.items()}
    heads = {label: (method_name(cfg), retention_name(cfg)) for label, cfg in configs.items()}
    found: list[tuple[tuple[str, str], str, dict[str, Any], tuple[tuple[Any, str], ...]]] = []
    for head, key in sorted({(heads[v], k) for v in configs for k in flats[v]
                             if is_knob_key(k) and heads[v][1] != NO_RETENTION}):
        groups: dict[str, list[str]] = {}  # the rest of the config -> the grid points
        for label in (v for v in configs if heads[v] == head and key in flats[v]):
            groups.setdefault(_freeze({k: v for k, v in flats[label].items() if k != key}), []).append(label)
        for rest, labels in groups.items():
            points = sorted(((flats[v][key], v) for v in labels), key=lambda p: (knob_sort_key(p[0]), p[1]))
            if len({_freeze(v) for v, _ in points}) >= 2:
                found.append((head, key, json.loads(rest), tuple(points)))
    grids = []
    for head, key, rest, points in found:
        siblings = [f for f in found if f[0] == head]
        differing = _differing([f[2] for f in siblings])
        extras = [f"{k}={format_value(rest[k])}" for k in differing if k != key and k in rest]
        extras += [f"over {key}"] if len({f[1] for f in siblings}) > 1 else []
        grids.append(KnobGrid(" ".join([f"{head[0]}+{head[1]}", *extras, "(tuned)"]), *head, key, points))
    return grids
