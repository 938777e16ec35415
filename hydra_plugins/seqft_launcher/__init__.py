"""Hydra plugins: the launchers ``hydra/launcher=stacked`` (the default of ``train.py -m``) and
``hydra/launcher=baseline_first``, the sweeper ``hydra/sweeper=stacked`` (the default) and the search
sweeper ``hydra/sweeper=search`` (Optuna, for ``hparams_search`` configs).

Hydra finds plugins in the ``hydra_plugins`` namespace package; this one is found because
``train.py`` sits beside it (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, setup_globals
from hydra_plugins.hydra_joblib_launcher._core import process_joblib_cfg
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from joblib import Parallel, delayed
from omegaconf import DictConfig

from seqft_lightning.errors import EXIT_USER_ERROR
from seqft_lightning.schedule import baseline_first, checked_stack_size, stack_groups, stack_key


def _in_sweep_order(order: Sequence[int], returns: Sequence[JobReturn]) -> list[JobReturn]:
    """``returns[position]`` belongs to job ``order[position]``: put them back in sweep order."""
    in_sweep_order: list[JobReturn] = [None] * len(order)  # type: ignore[list-item]
    for position, index in enumerate(order):
        in_sweep_order[index] = returns[position]
    return in_sweep_order


class BaselineFirstJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher (every option of ``hydra/launcher=joblib``), one process per job, starting
    the jobs in :func:`seqft_lightning.schedule.baseline_first` order. Returns come back in sweep
    order, as every sweeper (basic, Optuna) expects."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        order = baseline_first(job_overrides)
        return _in_sweep_order(order, super().launch([job_overrides[i] for i in order], initial_job_idx))


class StackingJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher (every option of ``hydra/launcher=joblib``) that runs a sweep's jobs in
    groups (:func:`seqft_lightning.schedule.stack_groups`: jobs that differ only in seeds and scalar
    knobs, at most ``stack_size`` per group), one group per worker process, each group's equal fits
    trained as one stack (:mod:`seqft_lightning.sweep_stack`). ``stack_size=1``: one job per group,
    the plain joblib launcher. Returns come back in sweep order."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from seqft_lightning.sweep_stack import execute_group  # torch and Lightning: only once a sweep runs

        setup_globals()
        stack_size = checked_stack_size(self.config)
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        joblib_cfg = self.joblib
        joblib_cfg["backend"] = "loky"  # as Hydra's joblib launcher: threads do not suit Hydra
        process_joblib_cfg(joblib_cfg)
        n_jobs = int(joblib_cfg.get("n_jobs") or 1)
        workers = (os.cpu_count() or 1) if n_jobs < 0 else n_jobs
        groups = stack_groups(job_overrides, stack_size, workers)
        singleton_state = Singleton.get_state()
        runs = Parallel(**joblib_cfg)(
            delayed(execute_group)([initial_job_idx + i for i in group], [job_overrides[i] for i in group],
                                   self.hydra_context, self.config, self.task_function, singleton_state)
            for group in groups)
        order = [i for group in groups for i in group]
        return _in_sweep_order(order, [r for group_returns in runs for r in group_returns])


class StackingBasicSweeper(BasicSweeper):
    """Hydra's basic sweeper (every option of ``hydra/sweeper=basic``). Before a batch starts, Hydra checks
    that each job's config composes (~0.13 s of one core per job, before any job runs); here a job that
    differs from an earlier one of its stack group (:func:`~seqft_lightning.schedule.stack_key`) only in
    seeds and knobs is checked on a copy of that one's config with its values set, as Hydra sets them
    (:func:`~seqft_lightning.sweep_stack.group_configs`, as the group's worker makes them); any other job is composed."""

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        from seqft_lightning.sweep_stack import group_configs

        groups: dict[tuple[str, ...], list[Sequence[str]]] = {}
        for overrides in batch:
            groups.setdefault(stack_key(overrides), []).append(overrides)
        for jobs in groups.values():
            group_configs(self.hydra_context.config_loader.load_sweep_config, self.config, jobs)


class _ValueCount:
    """A launcher as it is, counting the jobs it ran (``launched``) and those that returned a value (``valued``)."""

    def __init__(self, launcher: Any) -> None:
        self.launcher, self.launched, self.valued = launcher, 0, 0

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        returns = self.launcher.launch(job_overrides, initial_job_idx=initial_job_idx)
        self.launched += len(returns)
        self.valued += sum(r.status == JobStatus.COMPLETED and r.return_value is not None for r in returns)
        return returns


class SearchSweeper(OptunaSweeper):
    """Hydra's Optuna sweeper (every option of ``hydra/sweeper=optuna``), for the ``hparams_search`` configs. A trial
    refused or diverged returns no value (``train.py``): Optuna records it as failed and the search goes on. A search
    none of whose trials returned one has no best trial: one line and exit 2, instead of Optuna's traceback."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        self.sweeper.launcher = self.counted = _ValueCount(self.sweeper.launcher)

    def sweep(self, arguments: list[str]) -> Any:
        try:
            return super().sweep(arguments)
        except ValueError:  # Optuna: no completed trial, so no best one
            if not self.counted.launched or self.counted.valued:
                raise
        sys.stderr.write("error: no trial of the search returned a value (each was refused or diverged: its train.log "
                         "says which), so none is best; widen or move the search space, or check the shared settings\n")
        raise SystemExit(EXIT_USER_ERROR)
