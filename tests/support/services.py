"""Finding (or starting) the real services the tests need.

Order: the URL in the environment, else the default local port, else — outside CI only — a server
started for the run (testcontainers when a Docker engine answers, else an embedded server from a
wheel). In CI a missing service is a failure.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import pytest

DEFAULTS = {
    "nats": ("NATS_URL", "nats://127.0.0.1:4222", 4222),
    "postgres": ("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres", 5432),
    "redis": ("REDIS_URL", "redis://127.0.0.1:6379/0", 6379),
}


def reachable(url: str, default_port: int) -> bool:
    u = urlparse(url)
    try:
        with socket.create_connection((u.hostname or "127.0.0.1", u.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@contextlib.contextmanager
def ensure_service_urls() -> Iterator[dict[str, str]]:
    urls: dict[str, str] = {}
    missing = []
    for name, (var, default, port) in DEFAULTS.items():
        url = os.environ.get(var) or (os.environ.get("DATABASE_URL") if name == "postgres" else None) or default
        if reachable(url, port):
            urls[name] = url
        else:
            missing.append(f"{name} ({url})")
    if missing:
        msg = "required services are not reachable: " + ", ".join(missing)
        pytest.fail(msg if in_ci() else msg + " — start them or set NATS_URL / TEST_DATABASE_URL / REDIS_URL")
    yield urls
