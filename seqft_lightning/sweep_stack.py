"""One group of a Hydra sweep's jobs, run in one process with their training stacked.

Each job runs as Hydra runs it (``run_job``: its own folder, config files, ``train.log``, callbacks
and return value) inside a :class:`~seqft_lightning.lockstep.Lockstep`, which trains the jobs' equal
fits as one stack and keeps each job's view of the process (Hydra's job config and runtime, the
logging handlers, the random generators) its own. What a job writes is what it writes alone."""

from __future__ import annotations

import functools
from typing import Any, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobRuntime, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from seqft_lightning.errors import ConfigError
from seqft_lightning.interrupts import watching_interrupts
from seqft_lightning.provenance import pin_cpu_kernels

#: Hydra's per-job singletons, as (capture, restore) pairs for :class:`~seqft_lightning.lockstep.ProcessState`.
HYDRA_STATE = (
    (lambda: HydraConfig.instance().cfg, lambda cfg: setattr(HydraConfig.instance(), "cfg", cfg)),
    (lambda: JobRuntime.instance().conf, lambda conf: setattr(JobRuntime.instance(), "conf", conf)),
)


def _execute_job(index: int, overrides: Sequence[str], hydra_context: HydraContext, config: DictConfig,
                 task_function: TaskFunction) -> JobReturn:
    """Hydra's joblib ``execute_job``, less the per-process set-up that :func:`execute_group` does once."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{index}"
        sweep_config.hydra.job.num = index
    HydraConfig.instance().set_config(sweep_config)
    return run_job(hydra_context=hydra_context, config=sweep_config, task_function=task_function,
                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")


def execute_group(indices: Sequence[int], job_overrides: Sequence[Sequence[str]], hydra_context: HydraContext,
                  config: DictConfig, task_function: TaskFunction, singleton_state: dict[Any, Any]) -> list[JobReturn]:
    """Run the jobs ``job_overrides`` (their sweep indices ``indices``) in lockstep; their returns, in order."""
    setup_globals()
    Singleton.set_state(singleton_state)
    try:  # before torch loads: the group's jobs share cpu_kernels (stack_key); a job refuses a bad one itself
        pin_cpu_kernels(hydra_context.config_loader.load_sweep_config(config, list(job_overrides[0])).get("cpu_kernels"))
    except ConfigError:
        pass
    from seqft_lightning.lockstep import Lockstep
    from seqft_lightning.runner import train_stack

    works = [functools.partial(_execute_job, i, o, hydra_context, config, task_function) for i, o in zip(indices, job_overrides)]
    returns = []
    with watching_interrupts():
        outcomes = Lockstep(train_stack, extras=HYDRA_STATE).run(works)
    for ok, value in outcomes:
        if not ok:  # run_job keeps the task's own errors in its JobReturn: this is Hydra failing
            raise value
        returns.append(value)
    return returns
