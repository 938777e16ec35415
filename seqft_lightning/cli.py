"""Entry-point glue: turn user errors into one line and a nonzero exit."""

from __future__ import annotations

import logging
import sys
from typing import Callable, TypeVar

from seqft_lightning.errors import EXIT_USER_ERROR, SeqftError

log = logging.getLogger("seqft_lightning")

T = TypeVar("T")

CONSOLE = "console"  # LogRecord attribute: False keeps a record off the console handler


def in_sweep() -> bool:
    """True inside a job of ``train.py -m`` (Hydra's MULTIRUN mode)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class ConsoleFilter(logging.Filter):
    """What reaches the console handler (the run's ``train.log`` gets everything).

    Records logged with ``extra={"console": False}`` never do. Inside a sweep only warnings and
    errors do: the progress of a sweep is one line per job (:mod:`seqft_lightning.progress`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.min_level = logging.WARNING if in_sweep() else logging.NOTSET

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, CONSOLE, True) and record.levelno >= self.min_level


def run_or_exit(fn: Callable[[], T]) -> T:
    """Call ``fn``; on a :class:`SeqftError` log ``error: <message>`` and exit with status 2."""
    try:
        return fn()
    except SeqftError as err:
        # The bare line on stderr for the user; the log record (kept off the console by
        # ConsoleFilter) for the run's train.log.
        message = " ".join(str(err).split())  # one line, whatever the cause's text held
        log.error("error: %s", message, extra={CONSOLE: False})
        sys.stderr.write(f"error: {message}\n")
        sys.exit(EXIT_USER_ERROR)
