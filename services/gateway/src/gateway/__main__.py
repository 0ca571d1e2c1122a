"""``python -m gateway``: serve the gateway with uvicorn (uvloop, httptools) until SIGTERM/SIGINT, then
stop accepting connections, let open streams finish (up to ``GATEWAY_DRAIN_TIMEOUT_S``), close, exit 0.
Request headers are bounded in size and time (:mod:`gateway.httpguard`).

The start-up and the signals are every service's (:func:`servicekit.runtime.run_service`). The one
difference: the gateway is an HTTP server, so the service it runs is uvicorn's
(:func:`servicekit.runtime.serving_uvicorn`, which leaves the signals to the helper), and its event
loop is the one uvicorn is configured with (``loop="uvloop"``), named once here.
"""

from __future__ import annotations

import sys

import uvicorn

from servicekit.runtime import run_service, serving_uvicorn

from .app import create_app
from .httpguard import guarded_protocol
from .settings import GatewaySettings


def main() -> int:
    settings = GatewaySettings()
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout_s),
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=int(settings.drain_timeout_s) or None,
        lifespan="on",
    )
    return run_service("gateway", settings, lambda: serving_uvicorn(config), loop_factory=config.get_loop_factory())


if __name__ == "__main__":
    sys.exit(main())
