"""Hydra launcher plugin ``hydra/launcher=baseline_first`` (the default of ``train.py -m``).

Hydra finds plugins in the ``hydra_plugins`` namespace package; this one is found because
``train.py`` sits beside it (the script's folder is on ``sys.path``).
"""

from __future__ import annotations

from typing import Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_joblib_launcher.joblib_launcher import JoblibLauncher

from seqft_lightning.schedule import baseline_first


class BaselineFirstJoblibLauncher(JoblibLauncher):
    """Hydra's joblib launcher (every option of ``hydra/launcher=joblib``), starting the jobs in
    :func:`seqft_lightning.schedule.baseline_first` order. Returns come back in sweep order, as
    every sweeper (basic, Optuna) expects."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        order = baseline_first(job_overrides)
        returns = super().launch([job_overrides[i] for i in order], initial_job_idx)
        in_sweep_order: list[JobReturn] = [None] * len(order)  # type: ignore[list-item]
        for position, index in enumerate(order):
            in_sweep_order[index] = returns[position]
        return in_sweep_order
