"""Request/reply over NATS to the catalog and billing: typed, with "nobody answered" as a 503.

The gateway's one request/reply client: authentication, agent access, admission, model listing, runs
admitted ahead and the admin API all go through :func:`nats_requester`, and every request carries the
current trace context (W3C ``traceparent``), so catalog's and billing's spans join the request's trace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, TypeVar

import nats.errors
from pydantic import BaseModel, ValidationError

from servicekit.natsio import trace_headers, wait_connected
from servicekit.throttledlog import ThrottledLog

from .auth import Requester
from .errors import GatewayError, ServiceUnavailable

log = logging.getLogger(__name__)
#: A dependency that does not answer fails every request meanwhile: a line per kind every 10 s, not per request.
_unavailable = ThrottledLog(log)

if TYPE_CHECKING:
    from nats.aio.client import Client

R = TypeVar("R", bound=BaseModel)


def nats_requester(nc: Client, reconnect_wait_s: float = 0.0) -> Requester:
    """A :data:`gateway.auth.Requester` over ``nc``: no responders, a timeout or a closed connection →
    :class:`ServiceUnavailable`.

    A NATS restart is ridden out: while the connection is down, a request waits for it up to
    ``reconnect_wait_s``; for as long again after a reconnect, "no responders" (the catalog or billing
    not subscribed again yet) is retried rather than answered with a 503.
    """
    stats = getattr(nc, "stats", {})
    seen = {"reconnects": stats.get("reconnects", 0), "at": -reconnect_wait_s}

    def within_reconnect_window() -> bool:
        now = time.monotonic()
        reconnects = stats.get("reconnects", 0)
        if reconnects != seen["reconnects"]:
            seen["reconnects"], seen["at"] = reconnects, now
        return now - seen["at"] < reconnect_wait_s

    async def request(subject: str, payload: bytes, timeout_s: float) -> bytes:
        if not nc.is_connected and not await wait_connected(nc, reconnect_wait_s):
            raise ServiceUnavailable(subject)
        while True:
            try:
                msg = await nc.request(subject, payload, timeout=timeout_s, headers=trace_headers() or None)
            except nats.errors.NoRespondersError as exc:
                if within_reconnect_window():
                    await asyncio.sleep(0.05)
                    continue
                raise ServiceUnavailable(subject) from exc
            except (nats.errors.Error, TimeoutError) as exc:
                raise ServiceUnavailable(subject) from exc
            return msg.data

    return request


async def call(
    request: Requester, subject: str, message: BaseModel, reply_type: type[R], timeout_s: float, service: str
) -> R:
    """Ask ``service`` and decode its reply; 503 ``service_unavailable`` when it does not answer."""
    try:
        raw = await request(subject, message.model_dump_json().encode(), timeout_s)
        return reply_type.model_validate_json(raw)
    except ServiceUnavailable as exc:
        cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else "not connected to NATS"
        _unavailable.log(logging.WARNING, service, "the %s service did not answer (%s): 503", service, cause)
        raise GatewayError.unavailable(f"The {service} service is unavailable; try again shortly.") from exc
    except ValidationError as exc:
        _unavailable.log(
            logging.WARNING, f"{service}:unreadable", "the %s service's answer did not parse: 503", service
        )
        raise GatewayError.unavailable(f"The {service} service sent an answer we could not read.") from exc
