"""Lightning loggers that span a whole run (pretraining and every stage), not one ``fit``: Lightning
finalizes loggers after every ``Trainer.fit``, and a closed TensorBoard writer would open a new
event file. These only flush there; :func:`end_run` closes them once, at the end of the run."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger


class RunTensorBoardLogger(TensorBoardLogger):
    """``TensorBoardLogger`` writing one event file per run (same arguments)."""

    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self._experiment.flush()

    def end_run(self, status: str) -> None:
        # Lightning wrote hparams.yaml ({}) at the first fit and never overwrites it; the run's
        # hyperparameters are known only now.
        hparams_file = os.path.join(self.log_dir, self.NAME_HPARAMS_FILE)
        if self._fs.isfile(hparams_file):
            self._fs.rm(hparams_file)
        super().finalize(status)


def end_run(loggers: list[Any], status: str = "success") -> None:
    """Close every logger of a run once (``end_run`` where a logger has it, else ``finalize``)."""
    for logger in loggers:
        getattr(logger, "end_run", logger.finalize)(status)
