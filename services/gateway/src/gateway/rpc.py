"""Request/reply over NATS to the catalog and billing: typed, with "nobody answered" as a 503.

The gateway's one request/reply client: authentication, agent access, admission, model listing, runs
admitted ahead and the admin API all go through :func:`nats_requester`, and every request carries the
current trace context (W3C ``traceparent``), so catalog's and billing's spans join the request's trace.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import nats.errors
from pydantic import BaseModel, ValidationError

from servicekit.natsio import trace_headers

from .auth import Requester
from .errors import GatewayError, ServiceUnavailable

if TYPE_CHECKING:
    from nats.aio.client import Client

R = TypeVar("R", bound=BaseModel)


def nats_requester(nc: Client) -> Requester:
    """A :data:`gateway.auth.Requester` over ``nc``: no responders, a timeout or a closed connection →
    :class:`ServiceUnavailable`."""

    async def request(subject: str, payload: bytes, timeout_s: float) -> bytes:
        try:
            msg = await nc.request(subject, payload, timeout=timeout_s, headers=trace_headers() or None)
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
        raise GatewayError.unavailable(f"The {service} service is unavailable; try again shortly.") from exc
    except ValidationError as exc:
        raise GatewayError.unavailable(f"The {service} service sent an answer we could not read.") from exc
