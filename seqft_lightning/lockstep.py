"""Run several jobs in one process so that their training steps can be stacked.

Each job (a plain callable: a whole run of the study) runs in a thread of its own, but only one
thread runs at a time: a job runs until it asks for training (:func:`train_in_turn`), waits for a
lock another job holds (:func:`pause`) or ends. When every job has stopped so, the parked training
requests with equal keys are trained together, as one stack, by the ``train`` function, and their
jobs resume. Jobs never run concurrently, so the process-wide state that a run relies on (the
global random generators, the logging handlers, Hydra's job config, the working directory) is
swapped in and out per job: each job sees exactly what it would see alone, and gets the same numbers.

Outside a :class:`Lockstep`, :func:`train_in_turn` trains the request at once, as a stack of one.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Hashable

import numpy as np
import torch

_current = threading.local()  # .member: the _Member whose thread this is


class RandomState:
    """A copy of the process's global random generators (Python's, NumPy's, torch's CPU one and, if
    initialised, CUDA's): :meth:`capture` takes them, :meth:`restore` puts them back. ``torch_only``
    touches torch's generators only (what a batch loader draws from), which is cheaper."""

    def __init__(self) -> None:
        self.python = self.numpy = self.torch = self.cuda = None

    def capture(self, torch_only: bool = False) -> RandomState:
        if not torch_only:
            self.python, self.numpy = random.getstate(), np.random.get_state()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return self

    def restore(self, torch_only: bool = False) -> None:
        if not torch_only and self.python is not None:
            random.setstate(self.python)
            np.random.set_state(self.numpy)
        if self.torch is not None:
            torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


class ProcessState:
    """What one job changes in the process and must find again when it resumes: the random
    generators, the root logger's handlers and the working directory; ``extras``: further
    ``(capture, restore)`` pairs, e.g. Hydra's job config."""

    def __init__(self, extras: Sequence[tuple[Callable[[], Any], Callable[[Any], None]]] = ()) -> None:
        self.extras = list(extras)
        self.random = RandomState()
        self.handlers: list[logging.Handler] = []
        self.cwd = ""
        self.saved: list[Any] = []

    def capture(self) -> ProcessState:
        self.random.capture()
        self.handlers = list(logging.getLogger().handlers)
        self.cwd = os.getcwd()
        self.saved = [capture() for capture, _ in self.extras]
        return self

    def restore(self) -> None:
        self.random.restore()
        root = logging.getLogger()
        root.handlers[:] = self.handlers
        if os.getcwd() != self.cwd:
            os.chdir(self.cwd)
        for (_, restore), value in zip(self.extras, self.saved):
            restore(value)


@dataclass(eq=False)
class TrainRequest:
    """One job's request for training: requests with equal ``key`` can be trained as one stack;
    ``payload`` is what the train function needs; ``random`` the job's random generators (a loader
    draws each job's batches from its own generators)."""

    key: Hashable
    payload: Any
    random: RandomState | None = None


@dataclass(eq=False)
class _Member:
    work: Callable[[], Any]
    index: int
    state: ProcessState = field(default_factory=ProcessState)  # replaced by Lockstep.run
    go: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    request: TrainRequest | None = None
    reply: tuple[bool, Any] | None = None  # (ok, result or exception) for the parked request
    paused: bool = False
    done: bool = False
    outcome: tuple[bool, Any] | None = None  # (ok, return value or exception) of the work


class Lockstep:
    """Run ``works`` one thread at a time, training their parked requests in stacks through
    ``train(requests) -> results`` (one result per request, in order; an exception fails them all).
    :meth:`run` returns each work's ``(ok, return value or exception)``, in order. ``extras``: what
    else each job keeps of the process, as ``(capture, restore)`` pairs (see :class:`ProcessState`)."""

    def __init__(self, train: Callable[[list[TrainRequest]], Sequence[Any]],
                 extras: Sequence[tuple[Callable[[], Any], Callable[[Any], None]]] = ()):
        self.train = train
        self.extras = list(extras)
        self._yielded = threading.Semaphore(0)
        self.stacks: list[int] = []  # the size of every stack trained, in order (for tests and logs)

    def run(self, works: Sequence[Callable[[], Any]]) -> list[tuple[bool, Any]]:
        members = [_Member(work, i) for i, work in enumerate(works)]
        initial = ProcessState(self.extras).capture()
        for member in members:
            member.state = ProcessState(self.extras).capture()
            threading.Thread(target=self._body, args=(member,), name=f"lockstep-{member.index}", daemon=True).start()
        for member in members:
            self._turn(member)
        while True:
            # Requests parked by then, by key; each stack's jobs go on as soon as it is trained
            # (a job whose fits are short does not wait for another's long fit to finish its run).
            groups: dict[Hashable, list[_Member]] = {}
            for member in members:
                if member.request is not None:
                    groups.setdefault(member.request.key, []).append(member)
            for group in groups.values():
                self._train(group)
                for member in group:
                    self._turn(member)
            paused = [m for m in members if m.paused]
            for member in paused:
                self._turn(member)
            if not groups and not paused:
                break
            if paused and not groups:  # what they wait for is held outside this process
                time.sleep(0.05)
        initial.restore()
        return [m.outcome for m in members]

    def _turn(self, member: _Member) -> None:
        """Let ``member`` run until it parks, pauses or ends."""
        member.state.restore()
        member.paused = False
        member.go.release()
        self._yielded.acquire()
        member.state.capture()

    def _train(self, group: list[_Member]) -> None:
        requests = [m.request for m in group]
        for m in group:
            m.request = None
        try:
            results = self.train(requests)
            self.stacks.append(len(group))
            replies = [(True, r) for r in results]
        except BaseException as err:  # delivered to every job of the stack
            replies = [(False, err)] * len(group)
        for m, reply in zip(group, replies):
            m.reply = reply

    def _body(self, member: _Member) -> None:
        _current.member, _current.lockstep = member, self
        member.go.acquire()
        try:
            member.outcome = (True, member.work())
        except BaseException as err:
            member.outcome = (False, err)
        member.done = True
        self._yielded.release()

    def _park(self, member: _Member, request: TrainRequest) -> Any:
        request.random = member.state.random  # captured when it parks; the loaders draw from it
        member.request, member.reply = request, None
        self._yielded.release()
        member.go.acquire()
        ok, value = member.reply
        if not ok:
            raise value
        return value

    def _pause(self, member: _Member) -> None:
        member.paused = True
        self._yielded.release()
        member.go.acquire()


def in_lockstep() -> bool:
    """Whether the calling thread is a job of a :class:`Lockstep`."""
    return getattr(_current, "member", None) is not None


def member_random() -> RandomState | None:
    """The calling job's random generators inside a :class:`Lockstep` (else None: the process's own)."""
    member = getattr(_current, "member", None)
    return None if member is None else member.state.random


def train_in_turn(request: TrainRequest, train: Callable[[list[TrainRequest]], Sequence[Any]]) -> Any:
    """Train ``request``: inside a :class:`Lockstep`, with whatever requests of the same key the other
    jobs park (the lockstep's own train function does it); outside, at once, as a stack of one."""
    member = getattr(_current, "member", None)
    if member is None:
        return train([request])[0]
    return _current.lockstep._park(member, request)


def pause() -> bool:
    """Inside a :class:`Lockstep`, let the other jobs run first (call it while waiting for something
    another job holds, then try again); return False outside one (the caller should simply block)."""
    member = getattr(_current, "member", None)
    if member is None:
        return False
    _current.lockstep._pause(member)
    return True
