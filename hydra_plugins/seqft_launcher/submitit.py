"""``hydra/launcher=submitit_local`` and ``slurm``: Hydra's submitit launchers, stacking, with the sweep's console.

Each submitted job is one group of the sweep's jobs (:func:`seqft_lightning.schedule.stack_groups`,
at most ``stack_size`` jobs), run in lockstep with its alike fits stacked (``seqft_lightning.sweep_stack``);
``stack_size=1``: one submitted job per sweep job, as Hydra's own launchers.

A submitit job runs in its own process (locally, or on a cluster node) whose console is a log file
under ``<sweep dir>/.submitit/``, so the per-job line that :class:`~seqft_lightning.progress.SweepProgress`
writes there never reached the user. These launchers run Hydra's own ``launch`` (submit, then wait)
in a thread and meanwhile print, in the launching process, each job's line as its record appears in
``<sweep dir>/.progress/`` (written by the job when it ends), in the order the jobs finish.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Sequence

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.seqft_launcher import _in_sweep_order
from seqft_lightning.progress import PROGRESS_DIR, new_lines
from seqft_lightning.schedule import checked_stack_size, stack_groups

#: seconds between two looks at the sweep's progress records (a job takes seconds to hours)
POLL_S = 0.2


class _ConsoleMixin:
    """Echo each finished job's progress line on the launching process's console."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        progress = Path(str(self.config.hydra.sweep.dir)) / PROGRESS_DIR
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["returns"] = super(_ConsoleMixin, self).launch(job_overrides, initial_job_idx)
            except BaseException as err:  # re-raised in the launching thread below
                outcome["error"] = err

        thread = threading.Thread(target=run, name="submitit-launch", daemon=True)
        thread.start()
        shown: set[str] = set()
        while thread.is_alive():
            thread.join(POLL_S)
            for line in new_lines(progress, shown):
                sys.stderr.write(line + "\n")
            sys.stderr.flush()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["returns"]


class _StackingMixin:
    """Submit one job per group of stackable sweep jobs; each runs :func:`~seqft_lightning.sweep_stack.execute_group`."""

    def _run_group(self, indices: list[int], job_overrides: list[list[str]], singleton_state: dict) -> list[JobReturn]:
        from seqft_lightning.sweep_stack import execute_group

        return execute_group(indices, job_overrides, self.hydra_context, self.config, self.task_function, singleton_state)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        groups = stack_groups(job_overrides, checked_stack_size(self.config))
        # The executor as Hydra's submitit launcher builds it (same keys, same meaning).
        init_keys = {"max_num_timeout", "submitit_folder"}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, folder=self.params["submitit_folder"],
                                         **{f"{self._EXECUTOR}_max_num_timeout": self.params[k] for k in ("max_num_timeout",) if k in self.params})
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k not in init_keys})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        jobs = executor.map_array(self._run_group, [[initial_job_idx + i for i in g] for g in groups],
                                  [[list(job_overrides[i]) for i in g] for g in groups], [Singleton.get_state()] * len(groups))
        order = [i for group in groups for i in group]
        return _in_sweep_order(order, [r for job in jobs for r in job.results()[0]])


class SubmititLocalLauncher(_ConsoleMixin, _StackingMixin, LocalLauncher):
    """Hydra's ``submitit_local`` launcher, one process per group, with one console line per finished job."""


class SubmititSlurmLauncher(_ConsoleMixin, _StackingMixin, SlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher, one cluster job per group, with one console line per finished job."""

