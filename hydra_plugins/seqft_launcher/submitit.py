"""``hydra/launcher=submitit_local`` and ``slurm``: Hydra's submitit launchers with the sweep's console.

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

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from seqft_lightning.progress import PROGRESS_DIR, new_lines

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


class SubmititLocalLauncher(_ConsoleMixin, LocalLauncher):
    """Hydra's ``submitit_local`` launcher, with one console line per finished job."""


class SubmititSlurmLauncher(_ConsoleMixin, SlurmLauncher):
    """Hydra's ``submitit_slurm`` launcher, with one console line per finished job."""

