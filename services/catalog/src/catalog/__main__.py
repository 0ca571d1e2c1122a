"""``python -m catalog``: run the catalog until SIGTERM/SIGINT, then drain and exit."""

from __future__ import annotations

import asyncio
import logging
import signal
from types import FrameType

from faststream.asgi import AsgiFastStream

from servicekit.runtime import freeze_startup_heap
from servicekit.telemetry import setup_logging, setup_tracing

from .app import create_app
from .settings import CatalogSettings


def _drained(signum: int, frame: FrameType | None) -> None:
    """uvicorn re-raises the signal it shut down on once the drain is over; by then the work is done,
    so the process ends normally (exit 0) instead of dying of that signal."""


def main() -> None:
    settings = CatalogSettings()
    setup_logging(settings.log_level)
    setup_tracing("catalog", settings.otlp_endpoint)
    app = create_app(settings)
    app.after_startup(freeze_startup_heap)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional speed-up
        pass
    if isinstance(app, AsgiFastStream):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _drained)
        asyncio.run(
            app.run(
                log_level=logging.WARNING,
                run_extra_options={"host": settings.health_host, "port": settings.health_port, "access_log": "false"},
            )
        )
    else:
        asyncio.run(app.run())
    logging.getLogger("catalog").info("catalog stopped")


if __name__ == "__main__":
    main()
