"""Pure labelling of method variants (nothing here touches the file system).

A *variant* is a group of jobs whose composed configs are identical once the seeds (:func:`is_seed_key`: the
top-level ``seed`` and every ``*.seed`` / ``*_seed`` key, such as ``data.split_seed``, ``retention.seed`` and
``method.merger.seed``, which default to ``${seed}``) and the keys that do not affect results (:func:`seqft_lightning.contract.affects_results`: output paths, Hydra, loggers, callbacks,
console switches) are removed; the accelerator counts, so a GPU run is a variant of its own. Its label, readable
and unique within a sweep, is ``method.name [+<retention>] [key=value ...]``, where ``key=value`` lists every
remaining config leaf whose value differs between jobs that share the method name and retention.

A *knob curve* (:func:`knob_curves`) is a set of variants of one method and retention method whose configs
differ only in one retention knob (``retention.lambda_``, ...): the grid points of that knob. compare picks one
point per seed on the calibration split and reports it as the *tuned* variant ``method+retention (tuned)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from seqft_lightning.contract import NO_RETENTION, affects_results, flatten, retention_name

#: The name the pipeline writes as ``retention`` in metrics.json for plain fine-tuning.
#: Method families, in report order: naive (plus retention variants of these) and merging.
NAIVE_METHODS = ("baseline", "joint", "sequential")
MERGING_METHODS = ("task_arithmetic", "ties", "dare", "average", "task_negation")
FAMILIES = ("naive", "retention", "merging")


def variant_family(method: str, retention: str) -> str:
    """``"merging"`` for merging and negation methods, else ``"retention"`` when a retention
    method is on, else ``"naive"`` (baseline, sequential, joint, and unknown methods)."""
    if method in MERGING_METHODS:
        return "merging"
    return "naive" if retention == NO_RETENTION else "retention"


def is_seed_key(key: str) -> bool:
    """Whether the dotted config ``key`` is a seed: its last part is ``seed`` or ends in ``_seed`` (the top-level
    ``seed``, ``data.split_seed``, ``retention.seed``, ``method.merger.seed``). Seeds vary over the repeats of one
    variant, resolved per seed or as the text ``${seed}``; they never tell variants or knobs apart."""
    last = key.rsplit(".", 1)[-1]
    return last == "seed" or last.endswith("_seed")


def variant_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config without the seeds (:func:`is_seed_key`) and the keys that do not affect results."""
    return {k: v for k, v in flatten(cfg).items() if not is_seed_key(k) and affects_results(k)}


def method_name(cfg: Mapping[str, Any]) -> str:
    """``method.name`` of a config (``"unknown"`` when absent)."""
    method = cfg.get("method")
    return str(method.get("name") or "unknown") if isinstance(method, Mapping) else "unknown"


def format_value(value: Any) -> str:
    """Compact, deterministic text for a config leaf (lists as ``[[3],[4],[7]]``)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    except (TypeError, ValueError):
        return str(value)


def _freeze(flat: Mapping[str, Any]) -> str:
    return json.dumps(flat, sort_keys=True, default=str)


def variant_labels(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Variant label of each config, aligned with ``configs``.

    Jobs with equal configs (seed etc. removed) get equal labels; jobs whose configs
    differ get different labels (a ``#2`` suffix is the last resort against a clash).
    """
    flats = [variant_config(c) for c in configs]
    heads = [(method_name(c), retention_name(c)) for c in configs]
    differing: dict[tuple[str, str], list[str]] = {}
    for head in set(heads):
        members = [f for f, h in zip(flats, heads) if h == head]
        differing[head] = [k for k in sorted({k for f in members for k in f})
                           if len({_freeze({"v": f[k]}) if k in f else "<missing>" for f in members}) > 1]
    frozen = [_freeze(f) for f in flats]
    label_of: dict[str, str] = {}  # frozen config -> label
    for flat, key, (method, retention) in zip(flats, frozen, heads):
        if key not in label_of:
            label = " ".join([method if retention == NO_RETENTION else f"{method}+{retention}",
                              *(f"{k}={format_value(flat[k])}" for k in differing[(method, retention)] if k in flat)])
            base, i = label, 2
            while label in label_of.values():
                label, i = f"{base} #{i}", i + 1
            label_of[key] = label
    return [label_of[key] for key in frozen]


TUNED_SUFFIX = "(tuned)"


def is_knob_key(key: str) -> bool:
    """A retention setting that a sweep may tune: any ``retention.*`` leaf except the class and the seeds
    (:func:`is_seed_key`)."""
    return key.startswith("retention.") and key != "retention._target_" and not is_seed_key(key)


def knob_sort_key(value: Any) -> tuple:
    """Candidate order of knob values: numbers ascending; lists (e.g. ``retention.trainable``) by
    length, so fewer trainable layers come first; anything else by its text."""
    if isinstance(value, bool):
        return (1, int(value), "")
    if isinstance(value, (int, float)):
        return (0, float(value), "")
    if isinstance(value, (list, tuple)):
        return (2, len(value), format_value(value))
    return (3, 0, format_value(value))


@dataclass(frozen=True)
class KnobCurve:
    """Variants of one ``method``+``retention`` that differ only in ``key``: ``points`` are
    ``((value, variant label), ...)`` in candidate order (:func:`knob_sort_key`); ``label`` is the tuned label."""

    label: str
    method: str
    retention: str
    key: str
    points: tuple[tuple[Any, str], ...]

    @property
    def values(self) -> list[Any]:
        return [v for v, _ in self.points]

    @property
    def variants(self) -> list[str]:
        return [label for _, label in self.points]


def knob_curves(configs: Mapping[str, Mapping[str, Any]]) -> list[KnobCurve]:
    """Knob curves among variants, ``configs`` = ``{variant label: a job's config}``: per method, retention
    method (not ``none``) and knob key, variants whose :func:`variant_config` are equal but for that key and hold
    at least two values of it. The tuned label is ``method+retention [key=value ...] (tuned)``, with the keys that
    tell curves of one method and retention apart (and ``over <key>`` when it has curves over several knobs)."""
    flats = {label: variant_config(cfg) for label, cfg in configs.items()}
    heads = {label: (method_name(cfg), retention_name(cfg)) for label, cfg in configs.items()}
    found: list[tuple[tuple[str, str], str, dict[str, Any], list[tuple[Any, str]]]] = []
    for head in sorted(h for h in set(heads.values()) if h[1] != NO_RETENTION):
        members = [label for label in configs if heads[label] == head]
        for key in sorted({k for label in members for k in flats[label] if is_knob_key(k)}):
            groups: dict[str, list[str]] = {}
            for label in [m for m in members if key in flats[m]]:
                groups.setdefault(_freeze({k: v for k, v in flats[label].items() if k != key}), []).append(label)
            for frozen, labels in groups.items():
                points = sorted(((flats[label][key], label) for label in labels),
                                key=lambda p: (knob_sort_key(p[0]), p[1]))
                if len({_freeze({"v": v}) for v, _ in points}) >= 2:
                    found.append((head, key, json.loads(frozen), points))
    curves = []
    for head, key, rest, points in found:
        siblings = [f for f in found if f[0] == head]
        differing = sorted(k for k in {k for f in siblings for k in f[2]} if k != key and any(
            _freeze({"v": f[2].get(k)}) != _freeze({"v": rest.get(k)}) for f in siblings))
        extras = [f"{k}={format_value(rest[k])}" for k in differing if k in rest]
        extras += [f"over {key}"] if len({f[1] for f in siblings}) > 1 else []
        curves.append(KnobCurve(" ".join([f"{head[0]}+{head[1]}", *extras, TUNED_SUFFIX]), *head, key, tuple(points)))
    return curves
