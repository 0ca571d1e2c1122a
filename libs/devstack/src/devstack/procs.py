"""Child processes of a stack: started in their own process group, logged to a file, stopped for sure.

Every child runs in a new session (``start_new_session=True``) so that a terminal's Ctrl-C reaches
only the stack, which then stops the children in order, and so that a signal to the group also
reaches anything the child itself started. Processes still alive when the interpreter exits (a test
that failed half-way, an exception in the caller) are killed by an ``atexit`` hook.

A process remembers whether it is *wanted*: from :meth:`ManagedProcess.start` until
:meth:`ManagedProcess.stop` (a stop on purpose). :meth:`ManagedProcess.kill` is a crash and leaves it
wanted, so a supervised stack (:mod:`devstack.supervise`) starts it again.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

import httpx

from .errors import StackError

_LIVE: weakref.WeakSet[ManagedProcess] = weakref.WeakSet()


def free_port(host: str = "127.0.0.1", avoid: Collection[int] = ()) -> int:
    """A TCP port that was free a moment ago (bind port 0, read it, close), and not one of ``avoid``:
    ports already promised to processes that have not bound them yet, which the system may well hand
    out again meanwhile."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port
    raise OSError(f"no free port on {host} outside the {len(avoid)} already promised")


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a log file (empty when it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def url_reachable(url: str, default_port: int, timeout: float = 1.0) -> bool:
    """Whether the server a URL names (``nats://…``, ``postgresql://…``, ``redis://…``) accepts TCP."""
    u = urlparse(url)
    return tcp_accepts(u.hostname or "127.0.0.1", u.port or default_port, timeout)


class ManagedProcess:
    """One child process: its command, environment, log file and (optionally) a readiness URL."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        ready_url: str | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else dict(os.environ)
        self.ready_url = ready_url
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.wanted = False
        self.started_at = 0.0
        # Orders a stop on purpose against a supervisor's restart (another thread).
        self._lock = threading.RLock()

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the process (appending to its log file)."""
        with self._lock:
            self.wanted = True
            if self.running:
                return
            self._spawn()

    def restart_if_wanted(self) -> bool:
        """Start the process again unless it runs or was stopped on purpose; whether it was started."""
        with self._lock:
            if not self.wanted or self.running:
                return False
            self._spawn()
            return True

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- starting {self.name}: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        self.started_at = time.monotonic()
        _LIVE.add(self)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def exit_code(self) -> int | None:
        """The last run's exit code (negative: the signal that ended it); None while it runs."""
        return self.proc.poll() if self.proc else None

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the process group (the child and anything it started)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL now and reap (a crash, as a test wants it: still wanted, so a supervisor restarts it)."""
        if self.proc is None:
            return
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to ``timeout``, then SIGKILL (a stop on purpose: never restarted). Returns the
        exit code."""
        with self._lock:
            self.wanted = False
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        # Whatever the child left in its group (it should be nothing) goes too.
        self.signal_group(signal.SIGKILL)
        return self.proc.returncode

    # --- readiness ------------------------------------------------------------------------------
    def wait_until(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``check`` until it holds; fail early (with the log's tail) when the process exits."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise StackError(
                    f"{self.name} exited with code {self.proc.returncode} before {what}; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            if check():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{self.name} not {what} within {timeout:.0f}s; log {self.log_path}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until ``GET ready_url`` answers 200."""
        if self.ready_url is None:
            return
        url = self.ready_url

        def ready() -> bool:
            try:
                return httpx.get(url, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(ready, timeout, f"ready at {url}")


@atexit.register
def _kill_leftovers() -> None:
    for p in list(_LIVE):
        if p.running:
            p.kill()
