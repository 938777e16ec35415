"""The order a parallel sweep starts its jobs in: one job per pretrained baseline first.

Jobs that share a baseline (same seed, data, model, pretraining) wait for whichever of them
pretrains it (the cache's file lock). In Hydra's order, ``method=sequential,joint,task_arithmetic
seed=0,1,2`` on two workers has one worker wait on ``joint, seed=2`` for the seed-2 baseline
although ``task_arithmetic, seed=0`` could run. Here the first job of every baseline group starts
first, then the other jobs group by group, so a worker meets a job whose baseline is still being
trained only when nothing else is left.

The order never changes a result: each job's numbers depend on its config only.
"""

from __future__ import annotations

from typing import Sequence

#: Override keys (and config groups) that never change the pretrained baseline. Everything else
#: is treated as if it could: an unknown key only makes its own group, it never merges two.
_NOT_BASELINE = ("method", "retention", "selection", "optimized_metric", "resume", "logger", "callbacks", "hydra", "paths")
#: ... except these: they decide the held-out task classes, hence the pretraining pool.
_BASELINE_METHOD_KEYS = ("method.stages", "method.forget")


def baseline_group(overrides: Sequence[str]) -> tuple[str, ...]:
    """The overrides of one job that can change its pretrained baseline, e.g. ``('seed=1',)``.

    ``method=task_negation`` counts (its held-out classes are the forgotten ones), other method
    choices do not (they share the default stages' split).
    """
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
