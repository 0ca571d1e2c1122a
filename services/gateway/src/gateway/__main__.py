"""``python -m gateway``: serve the gateway with uvicorn (uvloop, httptools) until SIGTERM/SIGINT, then
drain (:mod:`gateway.drain`): ``/readyz`` 503 at once, new requests still served for
``GATEWAY_ACCEPT_GRACE_S``, then no new connections while open streams finish (up to
``GATEWAY_DRAIN_TIMEOUT_S``); close, exit 0. Request headers are bounded in size and time
(:mod:`gateway.httpguard`).

The start-up and the signals are every service's (:func:`servicekit.runtime.run_service`). The one
difference: the gateway is an HTTP server, so the service it runs is uvicorn's
(:func:`gateway.drain.serving` around :func:`servicekit.runtime.serving_uvicorn`, which leaves the
signals to the helper), and its event loop is the one uvicorn is configured with (``loop="uvloop"``),
named once here.
"""

from __future__ import annotations

import sys

import uvicorn

from servicekit.runtime import run_service

from .app import create_app
from .drain import graceful_timeout, serving
from .httpguard import guarded_protocol
from .settings import GatewaySettings


def main() -> int:
    settings = GatewaySettings()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded_protocol(settings.max_header_bytes, settings.header_timeout_s),
        access_log=settings.access_log,
        log_config=None,
        timeout_graceful_shutdown=graceful_timeout(settings.drain_timeout_s),
        lifespan="on",
    )
    return run_service(
        "gateway",
        settings,
        lambda: serving(config, app, settings.accept_grace_s),
        loop_factory=config.get_loop_factory(),
    )


if __name__ == "__main__":
    sys.exit(main())
