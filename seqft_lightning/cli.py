"""Entry-point glue: turn user errors into one line and a nonzero exit."""

from __future__ import annotations

import logging
import sys
from typing import Callable, TypeVar

from seqft_lightning.errors import SeqftError

log = logging.getLogger("seqft_lightning")

T = TypeVar("T")

EXIT_USER_ERROR = 2


def run_or_exit(fn: Callable[[], T]) -> T:
    """Call ``fn``; on a :class:`SeqftError` log ``error: <message>`` and exit with status 2."""
    try:
        return fn()
    except SeqftError as err:
        log.error("error: %s", err)
        # Also on stderr directly: Hydra may route logging to a file only.
        if not any(isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr for h in logging.getLogger().handlers):
            sys.stderr.write(f"error: {err}\n")
        sys.exit(EXIT_USER_ERROR)
