"""``python -m runner``: run until SIGTERM/SIGINT, then drain and exit 0."""

from __future__ import annotations

import asyncio
import logging
import signal

from servicekit.runtime import freeze_startup_heap
from servicekit.telemetry import setup_logging, setup_tracing

from .app import create_app
from .settings import RunnerSettings


async def _serve(settings: RunnerSettings) -> None:
    app = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await app.start()
    freeze_startup_heap()
    try:
        await stop.wait()
    finally:
        await app.stop()


def main() -> None:
    settings = RunnerSettings()
    setup_logging(settings.log_level)
    provider = setup_tracing("runner", settings.otlp_endpoint)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # optional speed-up
        pass
    asyncio.run(_serve(settings))
    provider.shutdown()  # flush the last spans
    logging.getLogger("runner").info("runner exited")


if __name__ == "__main__":
    main()
