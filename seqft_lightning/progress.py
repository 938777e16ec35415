"""One console line per finished sweep job: a Hydra callback (``conf/hydra/default.yaml``).

During ``python train.py -m ...`` the console shows, per finished job,
``[37/90] method=joint,seed=1 · 1.8 s · acc 57.5 % · ETA 1m20s``, and failures loudly with the
error and the job's log file; each job's full log stays in its ``train.log``. Works under every
launcher: the counter lives in files under ``<sweep dir>/.progress/`` (jobs of a joblib or
submitit sweep run in other processes), one file per finished job, created atomically.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from seqft_lightning.contract import METRICS_FILE, TRAIN_LOG_FILE, result_overrides

PROGRESS_DIR = ".progress"


def sweep_plan(task_overrides: list[str]) -> tuple[int, list[str]]:
    """How many jobs the basic sweeper makes of these command-line overrides (the product of the
    sweep lists' lengths), and the swept keys (they name a job on the console)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    size, keys = 1, []
    for override in OverridesParser.create().parse_overrides(task_overrides):
        if override.is_sweep_override():
            size *= len(list(override.sweep_string_iterator()))
            keys.append(override.get_key_element())
    return size, keys


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _workers(config: DictConfig, total: int) -> int:
    n_jobs = config.hydra.launcher.get("n_jobs")
    if n_jobs is None:  # basic launcher: one job at a time
        return 1
    n_jobs, cores = int(n_jobs), os.cpu_count() or 1
    return max(1, min(total, cores + 1 + n_jobs if n_jobs < 0 else n_jobs))  # joblib: -1 = every core


class SweepProgress(Callback):
    """Prints one line per finished job of a multirun (nothing for single runs)."""

    def __init__(self) -> None:
        self._started: float | None = None

    @staticmethod
    def _dir(config: DictConfig) -> Path:
        return Path(str(config.hydra.sweep.dir)) / PROGRESS_DIR

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        progress = self._dir(config)
        progress.mkdir(parents=True, exist_ok=True)
        for stale in progress.glob("*.json"):
            stale.unlink()
        total, swept = sweep_plan(list(config.hydra.overrides.task))
        workers = _workers(config, total)
        (progress / "total").write_text(json.dumps({"jobs": total, "workers": workers, "swept": swept}))
        sys.stderr.write(f"sweep: {total} jobs, {workers} at a time, into {config.hydra.sweep.dir}\n")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.perf_counter()

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            return
        elapsed = time.perf_counter() - (self._started or time.perf_counter())
        progress = self._dir(config)
        info = json.loads((progress / "total").read_text()) if (progress / "total").is_file() else {}
        job_dir = Path(str(config.hydra.runtime.output_dir))
        swept = set(info.get("swept", []))
        shown = [o for o in config.hydra.overrides.task if o.split("=", 1)[0] in swept]
        name = ",".join(shown or result_overrides(list(config.hydra.overrides.task))) or job_dir.name
        mine = progress / f"{config.hydra.job.num}.json"
        mine.write_text(json.dumps({"seconds": elapsed, "ok": job_return.status == JobStatus.COMPLETED}))
        done = sorted(progress.glob("*.json"))
        durations = [json.loads(p.read_text())["seconds"] for p in done]
        total, workers = max(info.get("jobs", 0), len(done)), info.get("workers", 1)
        eta = sum(durations) / len(durations) * (total - len(done)) / workers
        head = f"[{len(done)}/{total}] {name} · {elapsed:.1f} s"
        if job_return.status == JobStatus.COMPLETED:
            acc, divergence = _final_result(job_dir)
            acc_text = "" if acc is None or math.isnan(acc) else f" · acc {100 * acc:.1f} %"
            diverged = f" · DIVERGED: {divergence['reason']} (left out of compare's means)" if divergence else ""
            line = f"{head}{acc_text}{diverged} · ETA {_duration(eta)}"
        else:
            error = str(job_return._return_value).splitlines()[0] if job_return._return_value is not None else "unknown error"
            line = f"{head} · FAILED: {error} (see {job_dir / TRAIN_LOG_FILE})"
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _final_result(job_dir: Path) -> tuple[float | None, dict | None]:
    """The job's final test accuracy (a fraction) and its ``divergence`` entry (None: it did not diverge)."""
    try:
        metrics = json.loads((job_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return None, None
    try:
        acc = float(metrics["final"]["test/acc"])
    except (KeyError, TypeError, ValueError):
        acc = None
    divergence = metrics.get("divergence") if isinstance(metrics, dict) else None
    return acc, divergence if isinstance(divergence, dict) else None
