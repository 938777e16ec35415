"""Ctrl-C that is never lost. Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main
thread happens to be; if that is a finalizer (``__del__``, run by the garbage collector), Python
only prints "Exception ignored" and the run goes on to write results as if nothing happened. The
handler installed here also remembers the signal, and :func:`check_interrupted` (called before a
run writes its final checkpoint and ``metrics.json``) raises it again."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

_interrupted = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    signal.default_int_handler(signum, frame)


@contextlib.contextmanager
def watching_interrupts() -> Iterator[None]:
    """In the main thread: remember every SIGINT inside the block (it still raises ``KeyboardInterrupt``
    at once), then put the previous handler back; elsewhere, or under another handler, nothing changes."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield
        return
    _interrupted.clear()
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _interrupted.clear()


def check_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if SIGINT arrived inside :func:`watching_interrupts`, even if the first
    one was swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt("interrupted (SIGINT) before the run wrote its results")
