"""Supervision, as Kubernetes does it for a pod's containers: a process that exits without being asked
to is started again after a back-off (0.5 s, doubling to 10 s; back to 0.5 s once it has stayed up
for 30 s), and every exit and restart is reported. ``make run`` supervises its stack; the tests' stacks
do not (they kill services on purpose and expect them to stay down).

A process stopped on purpose (:meth:`devstack.procs.ManagedProcess.stop`) is never restarted; one
killed (:meth:`~devstack.procs.ManagedProcess.kill`, a crash as a test or an operator makes it) is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Supervised(Protocol):
    """What the supervisor needs of a process (:class:`devstack.procs.ManagedProcess`)."""

    log_path: Path

    @property
    def running(self) -> bool: ...

    @property
    def wanted(self) -> bool:
        """Started and not stopped on purpose since."""

    @property
    def started_at(self) -> float:
        """``time.monotonic()`` of its last start."""

    @property
    def exit_code(self) -> int | None: ...

    def restart_if_wanted(self) -> bool:
        """Start it again unless it runs or was stopped on purpose meanwhile; whether it was started."""


@dataclass
class Backoff:
    """Kubernetes' restart back-off, shorter: ``initial_s`` doubling to ``max_s``; reset once the
    process stayed up ``stable_s``."""

    initial_s: float = 0.5
    max_s: float = 10.0
    stable_s: float = 30.0
    _next: float = 0.0

    def delay(self, uptime_s: float) -> float:
        """The wait before restarting a process that exited after ``uptime_s`` seconds up."""
        if self._next == 0.0 or uptime_s >= self.stable_s:
            self._next = self.initial_s
        delay = self._next
        self._next = min(self._next * 2, self.max_s)
        return delay


@dataclass
class _State:
    backoff: Backoff
    due_at: float | None = None
    restarts: int = 0


class Supervisor:
    """Watches ``processes()`` every ``poll_s`` from a thread of its own; :meth:`check` is one look."""

    def __init__(
        self,
        processes: Callable[[], Mapping[str, Supervised]],
        report: Callable[[str], None] | None = None,
        *,
        backoff: Callable[[], Backoff] = Backoff,
        poll_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processes = processes
        self._report = report or log.warning
        self._backoff = backoff
        self._poll_s = poll_s
        self._clock = clock
        self._state: dict[str, _State] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def restarts(self, name: str) -> int:
        """How many times ``name`` was restarted."""
        state = self._state.get(name)
        return state.restarts if state else 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="devstack-supervisor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (before the stack stops its processes); returns once the thread is done."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.check()
            except Exception:  # the supervisor must outlive anything one process does
                log.exception("supervision check failed")

    def check(self) -> None:
        """Notice processes that exited unexpectedly, and restart those whose back-off is over."""
        now = self._clock()
        for name, p in list(self._processes().items()):
            state = self._state.setdefault(name, _State(self._backoff()))
            if not p.wanted or p.running:
                state.due_at = None
                continue
            if state.due_at is None:
                uptime = max(0.0, now - p.started_at)
                delay = state.backoff.delay(uptime)
                state.due_at = now + delay
                self._report(
                    f"{name} exited unexpectedly (code {p.exit_code}) after {uptime:.1f} s up; "
                    f"restarting it in {delay:.1f} s (log: {p.log_path})"
                )
            elif now >= state.due_at:
                state.due_at = None
                if p.restart_if_wanted():
                    state.restarts += 1
                    self._report(f"{name} restarted (restart {state.restarts})")
