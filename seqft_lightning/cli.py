"""Entry-point glue: turn user errors into one line and a nonzero exit."""

from __future__ import annotations

import logging
import sys
from typing import Callable, TypeVar

from seqft_lightning.errors import EXIT_USER_ERROR, SeqftError

log = logging.getLogger("seqft_lightning")

T = TypeVar("T")

CONSOLE = "console"  # LogRecord attribute: False keeps a record off the console handler


class ConsoleFilter(logging.Filter):
    """Drop records logged with ``extra={"console": False}`` (they go to log files only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, CONSOLE, True)


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
