"""``python -m gateway``: serve the gateway with uvicorn (uvloop, httptools). SIGTERM/SIGINT stop
accepting connections, let open streams finish (up to ``GATEWAY_DRAIN_TIMEOUT_S``), then close.
Request headers are bounded in size and time (:mod:`gateway.httpguard`)."""

from __future__ import annotations

import signal

import uvicorn

from servicekit.runtime import freeze_startup_heap
from servicekit.telemetry import setup_logging

from .app import create_app
from .httpguard import guarded_protocol
from .settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    setup_logging(settings.log_level)
    config = uvicorn.Config(
        create_app(settings, on_ready=freeze_startup_heap),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout_s),
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        lifespan="on",
    )
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal under the handler it found at start;
    # a no-op handler there makes a drained gateway exit 0 instead of dying of the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
