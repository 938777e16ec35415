"""The order a parallel sweep starts its jobs in: one job per pretrained baseline first. Jobs that
share a baseline wait for whichever of them pretrains it (the cache's lock); starting the first job
of every baseline group first, then the others group by group, a worker meets a job whose baseline
is still being trained only when nothing else is left. The order never changes a result."""

from __future__ import annotations

from typing import Sequence

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
