"""One console line per finished sweep job of ``train.py -m``: a Hydra callback (``conf/hydra/default.yaml``),
e.g. ``[37/90] method=joint,seed=1 · 1.8 s · acc 57.5 % · ETA 1m20s`` (the run's own wall time, without
the worker's start-up and imports; accuracy in percent); resumed jobs show as skipped, failures loudly
with the error and the job's log file (a crash's error also goes to the job's ``error.json``,
``{"error": <one line>, "exit_status": 1}``, for compare). Works under every launcher: the counter lives
in files under ``<sweep dir>/.progress/`` (jobs of a joblib or submitit sweep run in other processes),
one file per finished job, created atomically."""

from __future__ import annotations

import json
import itertools
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from seqft_lightning.cli import in_sweep, run_or_exit
from seqft_lightning.contract import (ERROR_FILE, METRICS_FILE, RUN_INFO_FILE, SELECTION_SCORE, TRAIN_LOG_FILE,
                                      result_overrides)
from seqft_lightning.errors import EXIT_USER_ERROR
from seqft_lightning.io import atomic_write_json, read_json
from seqft_lightning.resolvers import short_number
from seqft_lightning.resume import was_skipped
from seqft_lightning.schedule import checked_stack_size, stack_groups
from seqft_lightning.values import is_finite_number

PROGRESS_DIR = ".progress"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _workers(config: DictConfig, jobs: list[list[str]]) -> int:
    """Processes that run the sweep's ``jobs`` side by side (a search: its trials count, not their overrides)."""
    launcher, total = config.hydra.launcher, len(jobs)
    if (n_jobs := launcher.get("n_jobs")) is not None:  # joblib: -1 = every core
        n_jobs = int(n_jobs)
        return max(1, min(total, (os.cpu_count() or 1) + 1 + n_jobs if n_jobs < 0 else n_jobs))
    if "submitit" not in str(launcher.get("_target_", "")).lower():
        return 1  # basic: one at a time
    # submitit: every group of stacked jobs at once, each one process (SLURM: up to array_parallelism)
    processes = total if _is_search(config) else len(stack_groups(jobs, checked_stack_size(config)))
    parallel = launcher.get("array_parallelism")
    return max(1, processes if parallel is None else min(processes, int(parallel)))


def _sweep_jobs(config: DictConfig, task_overrides: list[str]) -> list[list[str]]:
    """The overrides of each job of the sweep, as the basic sweeper expands them (every combination of the
    sweep lists); a search sweeper (Optuna) proposes ``n_trials`` trials, counted as that many jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if _is_search(config):
        return [list(task_overrides)] * int(config.hydra.sweeper.n_trials)
    parsed = OverridesParser.create().parse_overrides(task_overrides)
    choices = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
               else [o.input_line] for o in parsed]
    return [list(job) for job in itertools.product(*choices)]


def _is_search(config: DictConfig) -> bool:
    """A search sweeper (Optuna): it proposes ``n_trials`` trials, ``n_jobs`` at a time."""
    return (config.hydra.get("sweeper") or {}).get("n_trials") is not None


def job_label(overrides: list[str]) -> str:
    """The console name of a job: its result-relevant overrides, sorted as its folder name is
    (:func:`seqft_lightning.resolvers.job_dirname`), numbers to 3 significant digits."""
    pairs = (override.partition("=") for override in sorted(result_overrides(overrides)))
    return ",".join(f"{key}={short_number(value, 3)}" for key, _, value in pairs)


class SweepProgress(Callback):
    """Prints one line per finished job of a multirun (nothing for single runs)."""

    def __init__(self) -> None:
        self._started: float | None = None

    @staticmethod
    def _dir(config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        checked_stack_size(config)
        run_or_exit(lambda: _check_sweep(config))  # one line and exit 2, before any job
        search = _is_search(config)
        progress = self._dir(config)
        progress.mkdir(parents=True, exist_ok=True)
        for stale in progress.glob("*.json"):
            stale.unlink()
        jobs = _sweep_jobs(config, list(config.hydra.overrides.task))
        total, workers = len(jobs), _workers(config, jobs)
        if search:  # trials come in batches of the sweeper's n_jobs
            workers = min(workers, int(config.hydra.sweeper.get("n_jobs") or 1))
            _quiet_optuna()
        (progress / "total").write_text(json.dumps({"jobs": total, "workers": workers}))
        what = "trials" if search else "jobs"
        sys.stderr.write(f"sweep: {total} {what}, {workers} at a time, into {config.hydra.sweep.dir}\n")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Keep a copy of this sweep's ``multirun.yaml`` in ``.sweeps/`` (the next sweep into the folder
        overwrites the file), and end with status 2 when a job was refused, after every other job ran."""
        sweep_dir = Path(str(config.hydra.sweep.dir))
        current = sweep_dir / "multirun.yaml"
        if current.is_file():
            kept = sweep_dir / ".sweeps"
            kept.mkdir(exist_ok=True)
            shutil.copyfile(current, kept / f"multirun-{len(list(kept.glob('multirun-*.yaml'))):03d}.yaml")
        if _is_search(config):
            _search_summary(config, sweep_dir)
        records = [json.loads(p.read_text()) for p in sorted(self._dir(config).glob("*.json"))]
        if failed := [r for r in records if not r.get("ok", True)]:
            sys.stderr.write(f"sweep: {len(failed)} of {len(records)} job(s) failed (listed above with their error and "
                             f"log); the others finished\n")
            sys.stderr.flush()
            sys.exit(EXIT_USER_ERROR)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not in_sweep():
            return
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        progress = self._dir(config)
        info = read_json(progress / "total")
        job_dir = Path(str(config.hydra.runtime.output_dir))
        name = job_label(list(config.hydra.overrides.task)) or job_dir.name
        error = read_json(job_dir / ERROR_FILE).get("error")  # a job refused for bad input
        if error is None and job_return.status != JobStatus.COMPLETED:  # a crash: compare reads error.json
            exc = job_return._return_value
            first_line = (str(exc).strip().splitlines() or [""])[0]
            error = f"{type(exc).__name__}: {first_line}" if exc is not None else "unknown error"
            atomic_write_json(job_dir / ERROR_FILE, {"error": error, "exit_status": 1})
        ok = error is None
        mine = progress / f"{config.hydra.job.num}.json"
        done = sorted({*progress.glob("*.json"), mine})
        durations = [elapsed if p == mine else json.loads(p.read_text())["seconds"] for p in done]
        total, workers = max(info.get("jobs", 0), len(done)), info.get("workers", 1)
        eta = sum(durations) / len(durations) * (total - len(done)) / workers
        # the run's own wall time (run_info.json: from the plan to the result files), so a worker's start-up
        # and imports do not count; a job that did not run shows its whole time
        run_time = read_json(job_dir / RUN_INFO_FILE).get("wall_time_s") if ok and not was_skipped(job_dir) else None
        head = f"[{len(done)}/{total}] {name} · {elapsed if run_time is None else run_time:.1f} s"

        if error is not None:
            line = f"{head} · FAILED: {error} (see {job_dir / TRAIN_LOG_FILE})"
        elif was_skipped(job_dir):
            line = f"{head} · skipped: complete with the same config and code (resume=true) · ETA {_duration(eta)}"
        else:
            metrics = read_json(job_dir / METRICS_FILE)
            acc, divergence = (metrics.get("final") or {}).get("test/acc"), metrics.get("divergence")
            acc_text = f" · acc {100 * acc:.1f} %" if is_finite_number(acc) else ""
            diverged = f" · DIVERGED: {divergence['reason']} (left out of compare's means)" if divergence else ""
            line = f"{head}{acc_text}{diverged} · ETA {_duration(eta)}"
        # the record, written atomically, carries the line for launchers whose jobs print elsewhere (submitit)
        atomic_write_json(mine, {"seconds": elapsed, "ok": ok, "line": line})
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def new_lines(progress: Path, shown: set[str]) -> list[str]:
    """The progress lines of jobs that ended since the last call (``shown``: the record files already
    echoed, updated here), in the order the jobs ended."""
    records = sorted((p for p in progress.glob("*.json") if p.name not in shown), key=lambda p: p.stat().st_mtime_ns)
    lines = []
    for path in records:
        try:
            line = json.loads(path.read_text()).get("line")
        except (OSError, ValueError):
            continue  # not yet complete: next time
        shown.add(path.name)
        if line:
            lines.append(line)
    return lines


def _search_corners(config: DictConfig) -> list[tuple[str, Any]]:
    """``(key, value)`` for each end of each searched setting's range (each choice of a categorical one), as the
    Optuna sweeper reads its space (``hydra.sweeper.params``, then the command line's sweeps); a range Optuna cannot
    sample is a one-line SeqftError."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override

    from seqft_lightning.errors import SeqftError

    parser, corners = OverridesParser.create(), []
    params = (config.hydra.sweeper.get("params") or {}).items()
    space_of = {o.key_or_group: o for o in parser.parse_overrides([f"{k}={v}" for k, v in params])}
    space_of |= {o.key_or_group: o for o in parser.parse_overrides(list(config.hydra.overrides.task)) if o.is_sweep_override()}
    for key, override in space_of.items():
        try:
            space = create_optuna_distribution_from_override(override)
        except (ValueError, AssertionError) as err:
            raise SeqftError(f"{override.input_line or key} is not a search space Optuna can sample: {err}") from None
        ends = space.choices if hasattr(space, "choices") else (space.low, space.high) if hasattr(space, "low") else ()
        corners += [(key, value) for value in ends]
    return corners


def _check_sweep(config: DictConfig) -> None:
    """Raise a one-line SeqftError for a sweep that cannot run: no joblib worker, or a search (Optuna) that no trial
    could finish (not a failed trial each and then the sweeper's traceback): fewer than one trial; a shared config
    that every trial would have refused; a search space whose ends (or choices) hold a refused value; no calibration
    split to report ``optimized_metric``. A basic sweep instead runs its valid jobs and lists the refused ones; a
    search's refused trial counts as failed."""
    from seqft_lightning.errors import SeqftError

    if config.hydra.launcher.get("n_jobs") == 0:
        raise SeqftError("hydra.launcher.n_jobs=0 runs no job; give the number of worker processes, or -1 for one per core")
    if not _is_search(config):
        return
    if int(config.hydra.sweeper.n_trials) < 1:
        raise SeqftError(f"hydra.sweeper.n_trials={config.hydra.sweeper.n_trials} runs no trial; give at least 1")
    from seqft_lightning.plan import plan_run

    cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(config.hydra.sweep.dir)  # a trial's folder does not exist yet
    try:
        plan_run(cfg)
        if int(cfg.data.calibration_size) == 0:
            raise SeqftError(f"data.calibration_size=0 leaves no calibration split, so no trial can report "
                             f"optimized_metric={cfg.optimized_metric}; give it calibration samples "
                             "(data.calibration_size > 0; MNIST's default is 5000)")
    except SeqftError as err:
        raise SeqftError(f"{err} (the search's shared config: every trial would fail)") from None
    for key, value in _search_corners(config):
        if isinstance(OmegaConf.select(cfg, key), DictConfig):
            continue  # a config group: a trial composes it anew
        trial = cfg.copy()
        with open_dict(trial):
            OmegaConf.update(trial, key, value, force_add=True)
        try:
            plan_run(trial)
        except SeqftError as err:
            raise SeqftError(f"{err} (the search space of {key} reaches {value}: a search must range over valid "
                             "values only)") from None


def _quiet_optuna() -> None:
    """Optuna prints its own coloured log lines (escape codes in a log file); its messages reach
    the log through Python's logging like every other library's instead."""
    import optuna

    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search_summary(config: DictConfig, sweep_dir: Path) -> None:
    """One line for the best trial of a search, saying what a negative selection score means."""
    import yaml

    try:
        result = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
        value, params = float(result["best_value"]), result["best_params"]
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return
    metric = str(config.get("optimized_metric", SELECTION_SCORE))
    meaning = ""
    if metric == SELECTION_SCORE:
        meaning = (" (negative: no trial kept calibration retained accuracy within selection.delta of the baseline's; "
                   "the value is the best trial's shortfall)" if value < 0 else
                   " (the calibration target accuracy of a trial that kept retained accuracy within selection.delta)")
    shown = ", ".join(f"{k}={short_number(str(v), 3)}" for k, v in params.items())
    sys.stderr.write(f"search: best {metric} = {short_number(str(value), 3)}{meaning}, at {shown}; "
                     f"all trials in {sweep_dir / 'optimization_results.yaml'}\n")
