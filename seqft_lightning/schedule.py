"""The order a parallel sweep starts its jobs in: one job per pretrained baseline first. Jobs that
share a baseline wait for whichever of them pretrains it (the cache's lock); starting the first job
of every baseline group first, then the others group by group, a worker meets a job whose baseline
is still being trained only when nothing else is left. The order never changes a result."""

from __future__ import annotations

import math
import sys
from typing import Any, Sequence

from seqft_lightning.contract import is_seed_key
from seqft_lightning.errors import EXIT_USER_ERROR

#: Override keys (and config groups) that never change the pretrained baseline. Everything else
#: is treated as if it could: an unknown key only makes its own group, it never merges two.
_NOT_BASELINE = ("method", "retention", "selection", "optimized_metric", "resume", "logger", "callbacks", "hydra", "paths")
#: ... except these: they decide the held-out task classes, hence the pretraining pool.
_BASELINE_METHOD_KEYS = ("method.stages", "method.forget")


def baseline_group(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides of one job that can change its pretrained baseline, e.g. ``('seed=1',)``
    (``method=task_negation`` holds out other classes; other method choices share the default split)."""
    group = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        root = key.split(".")[0].split("/")[0]
        if key == "method" and value == "task_negation" or key in _BASELINE_METHOD_KEYS or root not in _NOT_BASELINE:
            group.append(override.lstrip("+~"))
    return tuple(sorted(group))


def baseline_first(job_overrides: Sequence[Sequence[str]]) -> list[int]:
    """Indices into ``job_overrides`` in launch order: the first job of each baseline group (in
    sweep order), then the remaining jobs, group by group. Stable within a group."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(job_overrides):
        groups.setdefault(baseline_group(overrides), []).append(index)
    return [jobs[0] for jobs in groups.values()] + [i for jobs in groups.values() for i in jobs[1:]]


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def stack_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides of one job that decide which jobs it may share a stack with: all but the seeds
    and the scalar knobs (numbers: ``retention.lambda_=30``, ``method.merger.lambda_=0.5``). The one
    place of the stacking rule: jobs that agree on these train in one process, and whatever of their
    training is alike (same stage, shapes and optimizer: ``runner.fit_key``) is stacked there."""
    kept = []
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if not (is_seed_key(key) or _is_number_text(value)):
            kept.append(override.lstrip("+~"))
    return tuple(sorted(kept))


def stack_groups(job_overrides: Sequence[Sequence[str]], stack_size: int, workers: int = 1) -> list[list[int]]:
    """Indices into ``job_overrides``, grouped by :func:`stack_key` in sweep order, each group cut into
    even parts of at most ``stack_size`` jobs. With several ``workers``, a first group whose jobs each
    need a baseline of their own (``method=baseline seed=0,1,2,3,4``: its sweep starts by pretraining)
    is cut into one part per worker, its baselines dealt out in turn, so the workers pretrain different
    baselines side by side instead of one pretraining them all while the others wait for its locks;
    then the largest parts are halved until there are ``workers`` groups (so that every worker has
    one) or every group is one job."""
    if stack_size < 1:
        raise ValueError(f"stack_size must be >= 1, got {stack_size}")
    by_key: dict[tuple[str, ...], list[int]] = {}
    for index, overrides in enumerate(job_overrides):
        by_key.setdefault(stack_key(overrides), []).append(index)
    groups = []
    for jobs in by_key.values():
        parts = math.ceil(len(jobs) / stack_size)
        groups.extend(jobs[part::parts] for part in range(parts))
    first = groups[0] if groups else []
    if workers > 1 and len(first) > 1 and len({baseline_group(job_overrides[i]) for i in first}) == len(first):
        parts = min(workers, len(first))  # one job per baseline: a sweep that starts by pretraining
        groups[0:1] = [first[part::parts] for part in range(parts)]
    while len(groups) < workers and max(map(len, groups), default=1) > 1:
        largest = max(range(len(groups)), key=lambda i: len(groups[i]))
        jobs = groups.pop(largest)
        groups[largest:largest] = [jobs[0::2], jobs[1::2]]
    return groups


def checked_stack_size(config: Any) -> int:
    """The sweep config's ``stack_size`` (an int >= 1); anything else ends the sweep, before any job
    starts, with one line and exit 2 (checked by the launchers and by the sweep's console callback)."""
    value = config.get("stack_size", 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        sys.stderr.write(f"error: stack_size={value!r} must be an integer >= 1 (1 turns stacking off)\n")
        raise SystemExit(EXIT_USER_ERROR)
    return value
