"""One group of a Hydra sweep's jobs, run in one process with their training stacked.

Each job runs as Hydra runs it (``run_job``: its own folder, config files, ``train.log``, callbacks
and return value) inside a :class:`~seqft_lightning.lockstep.Lockstep`, which trains the jobs' equal
fits as one stack and keeps each job's view of the process (Hydra's job config and runtime, the
logging handlers, the random generators) its own. What a job writes is what it writes alone.

Hydra composes a job's config from the config files (~0.13 s of one CPU core each, more in a busy
worker); the jobs of a group differ only in seeds and scalar knobs, so the group composes its first
job's config and gives each other job a copy with its own values (:func:`group_configs`): the same
config Hydra composes."""

from __future__ import annotations

import copy
import functools
from typing import Any, Callable, Sequence

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobRuntime, run_job, setup_globals
from hydra.errors import ConfigCompositionException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from seqft_lightning.errors import ConfigError
from seqft_lightning.interrupts import watching_interrupts
from seqft_lightning.provenance import pin_cpu_kernels

#: Hydra's per-job singletons, as (capture, restore) pairs for :class:`~seqft_lightning.lockstep.ProcessState`.
HYDRA_STATE = (
    (lambda: HydraConfig.instance().cfg, lambda cfg: setattr(HydraConfig.instance(), "cfg", cfg)),
    (lambda: JobRuntime.instance().conf, lambda conf: setattr(JobRuntime.instance(), "conf", conf)),
)


def alike_sweep_config(template: DictConfig, template_overrides: Sequence[str], overrides: Sequence[str]) -> DictConfig | None:
    """The sweep config of the job ``overrides``, from ``template``, the one Hydra composed for ``template_overrides``:
    where the two lists differ only in the values of keys that hold a value (``seed=1``, ``retention.lambda_=30``),
    Hydra's composition differs only there and in the job's record of its overrides, so a copy of the template with
    those set (as Hydra sets them) is the config Hydra composes. None for any other difference (a config group, an
    added or deleted key, a list or mapping, a Hydra setting): compose that job."""
    parse = OverridesParser.create().parse_overrides
    old, new = parse(list(template_overrides)), parse(list(overrides))
    if len(old) != len(new):
        return None
    changed = []
    for before, after in zip(old, new):
        if before.input_line == after.input_line:
            continue
        key = after.key_or_group
        value = OmegaConf.select(template, key, throw_on_missing=False, default=changed)  # `changed`: a sentinel
        if (before.key_or_group != key or after.type != OverrideType.CHANGE or after.package is not None or after.is_sweep_override()
                or after.is_hydra_override() or key in template.hydra.runtime.choices or value is changed or OmegaConf.is_config(value)
                or isinstance(after.value(), (dict, list))):
            return None
        changed.append(after)
    config = copy.deepcopy(template)
    try:
        ConfigLoaderImpl._apply_overrides_to_config(changed, config)
    except ConfigCompositionException:
        return None
    task = [o for o in new if not o.is_hydra_override()]
    names = config.hydra.job.config.override_dirname
    with open_dict(config.hydra):
        config.hydra.overrides.task = [o.input_line for o in task]
        config.hydra.job.override_dirname = get_overrides_dirname(overrides=task, exclude_keys=list(names.exclude_keys),
                                                                  item_sep=names.item_sep, kv_sep=names.kv_sep)
    return config


def group_configs(compose: Callable[[DictConfig, list[str]], DictConfig], master: DictConfig,
                  job_overrides: Sequence[Sequence[str]]) -> list[DictConfig]:
    """The sweep config of each job of a group (``compose(master, overrides)``: Hydra's ``load_sweep_config``): the
    first composed, each other a copy of it with its values (:func:`alike_sweep_config`), or composed where unlike."""
    template = compose(master, list(job_overrides[0]))
    return [template] + [alike_sweep_config(template, job_overrides[0], o) or compose(master, list(o)) for o in job_overrides[1:]]


def _execute_job(index: int, sweep_config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction) -> JobReturn:
    """Hydra's joblib ``execute_job`` on a composed ``sweep_config``, less the per-process set-up that
    :func:`execute_group` does once."""
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
    # every config is made before any job runs (run_job writes into its job's config, the template included)
    configs = group_configs(hydra_context.config_loader.load_sweep_config, config, job_overrides)
    try:  # before torch loads: the group's jobs share cpu_kernels (stack_key); a job refuses a bad one itself
        pin_cpu_kernels(configs[0].get("cpu_kernels"))
    except ConfigError:
        pass
    from seqft_lightning.lockstep import Lockstep
    from seqft_lightning.runner import train_stack

    works = [functools.partial(_execute_job, i, c, hydra_context, task_function) for i, c in zip(indices, configs)]
    returns = []
    with watching_interrupts():
        outcomes = Lockstep(train_stack, extras=HYDRA_STATE).run(works)
    for ok, value in outcomes:
        if not ok:  # run_job keeps the task's own errors in its JobReturn: this is Hydra failing
            raise value
        returns.append(value)
    return returns
