"""Pure labelling of method variants.

A *variant* is a group of jobs whose composed configs are identical once the seed (and
keys that cannot change the result: output paths, Hydra internals, accelerator/devices,
loggers and callbacks) are removed. Its label is readable and unique within a sweep::

    method.name [+<retention>] [key=value ...]

where ``key=value`` lists every remaining config leaf whose value differs between jobs
that share the same method name and retention (so two stage orders of ``sequential``
get distinct labels, while a hyper-parameter that only the EWC jobs carry does not
clutter the plain label). Nothing here touches the file system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

NO_RETENTION = "none"
#: Retention names meaning "no retention" (``Retention`` is the pipeline's no-op base class).
_NONE_NAMES = {"", "none", "null", "retention", "noretention", "no_retention", "identity", "noop"}

#: Exact keys (dotted) that never define a variant: the seed, where it ran, and switches that
#: cannot change a result (resume a finished run, reuse a cached baseline, console output).
EXCLUDED_KEYS = frozenset({"seed", "trainer.accelerator", "trainer.devices", "paths", "hydra",
                           "resume", "pretrain.cache", "trainer.enable_progress_bar",
                           "trainer.enable_model_summary", "trainer.log_every_n_steps"})
#: Dotted-key prefixes that never define a variant.
EXCLUDED_PREFIXES = ("paths.", "hydra.")
#: A key is also excluded when any of its dotted components is one of these.
EXCLUDED_COMPONENTS = frozenset({"logger", "loggers", "callbacks"})

def flatten_config(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested mapping into ``{"a.b.c": leaf}``.

    Lists and empty mappings are leaves (``method.stages`` stays ``[[3], [4], [7]]``).
    """
    flat: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, prefix=f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def is_excluded_key(key: str) -> bool:
    """True for config leaves that must not define or label a variant (seed, paths, ...)."""
    if key in EXCLUDED_KEYS or key.startswith(EXCLUDED_PREFIXES):
        return True
    return any(part in EXCLUDED_COMPONENTS for part in key.split("."))


def variant_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The flattened config with seed and other non-defining keys removed.

    Without retention (absent in older runs, or the no-op ``Retention``) the ``retention.*``
    keys are dropped too, so both spellings of "no retention" form one variant.
    """
    flat = {k: v for k, v in flatten_config(cfg).items() if not is_excluded_key(k)}
    if retention_name(cfg) == NO_RETENTION:
        flat = {k: v for k, v in flat.items() if k != "retention" and not k.startswith("retention.")}
    return flat


def method_name(cfg: Mapping[str, Any], default: str = "unknown") -> str:
    """``method.name`` of a config (``default`` when absent)."""
    method = cfg.get("method")
    if isinstance(method, Mapping) and method.get("name") not in (None, ""):
        return str(method["name"])
    if isinstance(method, str) and method:
        return method
    return default


def retention_name(cfg: Mapping[str, Any]) -> str:
    """Short lower-case retention name, ``"none"`` when absent (older runs) or a no-op.

    ``retention.name`` wins when present; otherwise the class name of
    ``retention._target_`` (``seqft_lightning.retention.EWC`` -> ``"ewc"``).
    """
    ret = cfg.get("retention")
    if ret is None:
        return NO_RETENTION
    if isinstance(ret, str):
        name = ret
    elif isinstance(ret, Mapping):
        if ret.get("name") not in (None, ""):
            name = str(ret["name"])
        elif ret.get("_target_") not in (None, ""):
            name = str(ret["_target_"]).rsplit(".", 1)[-1]
        else:
            return NO_RETENTION
    else:
        return NO_RETENTION
    name = name.strip().lower()
    return NO_RETENTION if name in _NONE_NAMES else name


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
        keys = sorted({k for f in members for k in f})
        differing[head] = [
            k for k in keys
            if len({_freeze({"v": f[k]}) if k in f else "<missing>" for f in members}) > 1
        ]

    labels: list[str] = []
    label_of_config: dict[str, str] = {}
    used: set[str] = set()
    for flat, (method, retention) in zip(flats, heads):
        frozen = _freeze(flat)
        if frozen in label_of_config:
            labels.append(label_of_config[frozen])
            continue
        label = method if retention == NO_RETENTION else f"{method}+{retention}"
        extras = [f"{k}={format_value(flat[k])}" for k in differing[(method, retention)] if k in flat]
        if extras:
            label = " ".join([label, *extras])
        base, i = label, 2
        while label in used:
            label, i = f"{base} #{i}", i + 1
        used.add(label)
        label_of_config[frozen] = label
        labels.append(label)
    return labels


def slugify(label: str) -> str:
    """File-name-safe version of a variant label."""
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_")
    return slug or "variant"
