"""Request/reply handlers (queue group "billing"): decode, ask the service, reply. Never leave a caller waiting.

Whatever a request holds, it gets one answer: a body that does not decode or validate → 400; a
:class:`billing.errors.BillingError` → its own error; a value the database refuses (a data error,
see :mod:`billing.faults`: the service's checks should have caught it) → 400; anything else → 500.
Error messages are cut short, so that an answer never echoes a megabyte back.

Raw nats-py, not FastStream: admission is on every request's path, and these hand-written callbacks
answer concurrently in about 0.5 ms per admission (measured, docs/performance.md); FastStream's
per-message machinery would add to that. The catalog, off the hot path, uses FastStream.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ValidationError

from contracts import (
    BILLING_QUEUE,
    AdminReply,
    AdminRequest,
    AdmitReply,
    AdmitRequest,
    BalanceReply,
    BalanceRequest,
    ErrorInfo,
    ExtendReply,
    ExtendRequest,
    PrefetchReply,
    PrefetchRequest,
    PricesChanged,
    RunAdmitted,
    RunClosed,
    Subjects,
)
from contracts.subjects import MSG_ID_HEADER
from servicekit import telemetry
from servicekit.natsio import context_from_headers, flush_in_order, trace_headers

from .errors import BillingError
from .faults import Fault, classify, describe
from .service import BillingService

log = logging.getLogger(__name__)
tracer = trace.get_tracer("billing")


#: The longest error message an answer carries.
MESSAGE_MAX = 500


def _error(status: int, message: str, type_: str, code: str | None = None) -> ErrorInfo:
    return ErrorInfo(status=status, type=type_, message=message[:MESSAGE_MAX], code=code)


async def register(
    nc: Client, subjects: Subjects, service: BillingService, inflight: set[asyncio.Task[None]]
) -> list[Any]:
    """Subscribe every handler; answers in flight are kept in ``inflight`` (awaited on shutdown)."""

    def handler(
        name: str,
        request_type: type[BaseModel],
        call: Callable[[Any], Awaitable[BaseModel]],
        on_error: Callable[[ErrorInfo], BaseModel],
    ):  # type: ignore[no-untyped-def]
        async def answer(msg: Msg) -> None:
            # A consumer span of the request, in the asker's trace (its headers carry the context).
            with telemetry.span(
                tracer,
                name,
                context=context_from_headers(msg.headers),
                kind=SpanKind.CONSUMER,
                attributes=lambda: {
                    "messaging.system": "nats",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": msg.subject,
                },
            ):
                try:
                    reply = await call(request_type.model_validate_json(msg.data))
                except ValidationError as exc:
                    reply = on_error(_error(400, f"invalid request: {exc.errors()[0]['msg']}", "invalid_request_error"))
                except BillingError as exc:
                    info = exc.info.model_copy(update={"message": exc.info.message[:MESSAGE_MAX]})
                    reply = on_error(info)
                except Exception as exc:
                    fault = classify(exc)
                    if fault is Fault.DATA:
                        log.warning("billing %s: the database refused a value of the request (%s)", name, describe(exc))
                        message = "invalid request: a value is out of range or cannot be stored"
                        reply = on_error(_error(400, message, "invalid_request_error"))
                    elif fault is Fault.TRANSIENT:
                        # The database is unreachable or restarting: a moment's outage, not a bug (one
                        # line, no trace; the client may try again, and the openai SDKs do).
                        log.warning("billing %s: the database is unavailable (%s)", name, describe(exc))
                        message = "The billing service is unavailable; try again shortly."
                        reply = on_error(_error(503, message, "server_error", "service_unavailable"))
                    else:
                        log.exception("billing %s failed", name)
                        reply = on_error(_error(500, "billing failed to answer; try again", "server_error"))
            if msg.reply:
                try:
                    await msg.respond(reply.model_dump_json().encode())
                except Exception:  # NATS reconnecting: the caller times out and retries
                    log.warning("billing %s: the answer could not be sent", name, exc_info=True)

        async def cb(msg: Msg) -> None:
            # nats-py runs a subscription's callbacks one after another: answer concurrently instead.
            task = asyncio.create_task(answer(msg))
            inflight.add(task)
            task.add_done_callback(inflight.discard)

        return cb

    async def admit(req: AdmitRequest) -> AdmitReply:
        reply = await service.admit(req)
        if reply.admitted and req.announce:
            # The run is queued already and its runner waits for this; it leaves with the reply.
            go = RunAdmitted(run_id=req.run_id, reservation_id=reply.reservation_id)
            await nc.publish(subjects.run_admitted(req.run_id), go.model_dump_json().encode())
        return reply

    js = nc.jetstream()

    async def prefetch(req: PrefetchRequest) -> PrefetchReply:
        # Past its answer_by the gateway has given up (billing or its database stalled meanwhile):
        # holds made now would wait, unused, for the expiry sweep.
        if _past(req.answer_by):
            return PrefetchReply()
        reply = await service.prefetch(req)
        if reply.reservations and _past(req.answer_by):
            log.warning("runs admitted ahead for %s after the gateway stopped waiting: handing them back", req.user_id)
            for run_id, reservation_id in reply.reservations.items():
                closed = RunClosed(
                    run_id=run_id, user_id=req.user_id, reservation_id=reservation_id, calls=0, status="cancelled"
                )
                await _hand_back(js, subjects, closed)
            return PrefetchReply()
        return reply

    subs = [
        await nc.subscribe(
            subjects.billing_admit,
            queue=BILLING_QUEUE,
            cb=handler("billing.admit", AdmitRequest, admit, lambda e: AdmitReply(admitted=False, error=e)),
        ),
        await nc.subscribe(
            subjects.billing_prefetch,
            queue=BILLING_QUEUE,
            cb=handler("billing.prefetch", PrefetchRequest, prefetch, lambda e: PrefetchReply(error=e)),
        ),
        await nc.subscribe(
            subjects.billing_extend,
            queue=BILLING_QUEUE,
            cb=handler("billing.extend", ExtendRequest, service.extend, lambda e: ExtendReply(ok=False, error=e)),
        ),
        await nc.subscribe(
            subjects.billing_balance,
            queue=BILLING_QUEUE,
            cb=handler("billing.balance", BalanceRequest, service.balance, lambda e: BalanceReply(user_id="", error=e)),
        ),
        await nc.subscribe(
            subjects.billing_admin,
            queue=BILLING_QUEUE,
            cb=handler("billing.admin", AdminRequest, service.admin, lambda e: AdminReply(status=e.status, error=e)),
        ),
        await nc.subscribe(subjects.billing_prices_changed, cb=_reload_prices(service)),
    ]
    await flush_in_order(nc)  # the subscriptions reach the server before anyone is told billing is ready
    return subs


def _reload_prices(service: BillingService) -> Callable[[Msg], Awaitable[None]]:
    """On a :class:`contracts.PricesChanged` (from any replica, this one included): serve the stored
    prices, so that no replica admits or bills at a price an operator replaced."""

    async def cb(msg: Msg) -> None:
        try:
            event = PricesChanged.model_validate_json(msg.data)
            await service.reload_prices()
        except ValidationError:
            log.warning("ignored a malformed price change")
        except Exception:
            log.exception("reloading the prices after a price change failed; this replica serves the ones it had")
        else:
            log.info("the price of %r was set: prices reloaded", event.model_key)

    return cb


def announcer(nc: Client, subjects: Subjects) -> Callable[[str], Awaitable[None]]:
    """Publishes a :class:`contracts.PricesChanged` for a price set (best effort: a gateway that misses
    it still hands its runs ahead back within their age, and drops them on a reconnect)."""

    async def announce(model_key: str) -> None:
        event = PricesChanged(model_key=model_key)
        try:
            await nc.publish(
                subjects.billing_prices_changed, event.model_dump_json().encode(), headers=trace_headers() or None
            )
        except Exception as exc:
            log.warning("announcing the price set on %r failed (%s)", model_key, exc)

    return announce


#: Tries at handing back a run admitted too late (each waits up to :data:`HAND_BACK_TIMEOUT_S`).
HAND_BACK_ATTEMPTS = 3
HAND_BACK_TIMEOUT_S = 2.0


def _past(answer_by: datetime | None) -> bool:
    return answer_by is not None and datetime.now(UTC) > answer_by


def late_close_id(closed: RunClosed) -> str:
    """The message id of billing's own close of a run admitted too late. Not the run's usual one: the
    gateway closes every run of an ask it stopped waiting for too, and its close may reach the USAGE
    consumer before this reservation committed (releasing nothing); the stream must not then drop
    this close as a copy of that one."""
    return f"{closed.msg_id}:late"


async def _hand_back(js: JetStreamContext, subjects: Subjects, closed: RunClosed) -> None:
    """Close a run admitted too late, with no calls: the USAGE consumer releases its hold (the message
    id makes a second copy of this close harmless). Best effort: the expiry sweep releases it in the end."""
    for attempt in range(1, HAND_BACK_ATTEMPTS + 1):
        try:
            await js.publish(
                subjects.usage_run_closed,
                closed.model_dump_json().encode(),
                timeout=HAND_BACK_TIMEOUT_S,
                headers={MSG_ID_HEADER: late_close_id(closed)},
            )
            return
        except Exception as exc:
            if attempt == HAND_BACK_ATTEMPTS:
                log.warning("handing back run %s failed (%s); its hold expires instead", closed.run_id, exc)
