"""A uvicorn server for a service's health and metrics port that leaves signals to the service."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """uvicorn would take SIGTERM/SIGINT over (and re-raise them on exit); the service's own handler
    drains its work on those signals, so this server never installs any."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
