"""NATS request/reply handlers (thin): decode, call the service, reply.

Each handler reads the raw message and validates it itself, so that a malformed request still gets
an answer (a 400) and an unexpected failure a 500 envelope: a handler that raised would leave the
gateway waiting for its timeout. The same holds for a reply that cannot be encoded: it becomes a 500
envelope too, so every request is answered.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from faststream import Context
from faststream.nats import NatsBroker
from faststream.nats.annotations import NatsMessage
from pydantic import BaseModel, ValidationError

from contracts import (
    CATALOG_QUEUE,
    AdminReply,
    AdminRequest,
    AgentAccessReply,
    AgentAccessRequest,
    CacheInvalidated,
    ListModelsReply,
    ListModelsRequest,
    Subjects,
    VerifyKeyReply,
    VerifyKeyRequest,
)

from . import admin
from .errors import CatalogError
from .metrics import Metrics
from .service import CatalogService

log = logging.getLogger(__name__)

Req = TypeVar("Req", bound=BaseModel)
Service = Annotated[CatalogService, Context("catalog")]
Meter = Annotated[Metrics, Context("catalog_metrics")]
Raw = NatsMessage  # the raw message (faststream injects it from the context)
#: The largest reply sent: NATS's default max_payload (1 MiB), less room for headers.
MAX_REPLY_BYTES = 1024 * 1024 - 4096


def _error_reply(reply_type: type[BaseModel], err: CatalogError) -> bytes:
    if reply_type is AdminReply:
        return admin.error_reply(err).model_dump_json().encode()
    return reply_type(error=err.info()).model_dump_json().encode()  # type: ignore[call-arg]


async def _answer(
    name: str,
    raw: NatsMessage,
    metrics: Metrics,
    req_type: type[Req],
    reply_type: type[BaseModel],
    call: Callable[[Req], Awaitable[Any]],
) -> bytes:
    with metrics.time(name) as outcome:
        try:
            req = req_type.model_validate_json(raw.body)
        except ValidationError as exc:
            outcome.set("bad_request")
            return _error_reply(reply_type, admin.validation_error(exc))
        try:
            reply = await call(req)
        except CatalogError as err:
            outcome.set(str(err.status))
            return _error_reply(reply_type, err)
        except Exception:
            log.exception("%s failed", name)
            outcome.set("error")
            return _error_reply(reply_type, CatalogError("Internal error in the catalog."))
        try:
            data = reply.model_dump_json().encode()
        except Exception:
            log.exception("%s: the reply could not be encoded", name)
            outcome.set("error")
            return _error_reply(reply_type, CatalogError("Internal error in the catalog."))
        if len(data) > MAX_REPLY_BYTES:
            # NATS would refuse to carry it and the caller would hear nothing until its timeout.
            log.error("%s: a reply of %d bytes is too large to send", name, len(data))
            outcome.set("error")
            return _error_reply(reply_type, CatalogError("The answer is too large to send.", code="reply_too_large"))
        status = getattr(getattr(reply, "error", None), "status", None) or getattr(reply, "status", 200)
        outcome.set(str(status))
        return data


def register(broker: NatsBroker, subjects: Subjects, *, workers: int) -> None:
    """Subscribe the four request/reply handlers in queue group ``catalog``, and every replica to the
    invalidation fan-out (core NATS: no acks)."""

    @broker.subscriber(subjects.catalog_verify_key, queue=CATALOG_QUEUE, max_workers=workers)
    async def verify_key(raw: Raw, svc: Service, metrics: Meter) -> bytes:
        """Who does this API key hash act as?"""
        return await _answer("verify_key", raw, metrics, VerifyKeyRequest, VerifyKeyReply, svc.verify_key)

    @broker.subscriber(subjects.catalog_agent_access, queue=CATALOG_QUEUE, max_workers=workers)
    async def agent_access(raw: Raw, svc: Service, metrics: Meter) -> bytes:
        """May this user run this agent? The agent's snapshot when they may."""
        return await _answer("agent_access", raw, metrics, AgentAccessRequest, AgentAccessReply, svc.agent_access)

    @broker.subscriber(subjects.catalog_models_list, queue=CATALOG_QUEUE, max_workers=workers)
    async def models_list(raw: Raw, svc: Service, metrics: Meter) -> bytes:
        """The agents this user may run, as OpenAI models."""
        return await _answer("models_list", raw, metrics, ListModelsRequest, ListModelsReply, svc.list_models)

    @broker.subscriber(subjects.catalog_admin, queue=CATALOG_QUEUE, max_workers=max(1, workers // 4))
    async def admin_request(raw: Raw, svc: Service, metrics: Meter) -> bytes:
        """One catalog admin operation."""

        async def run(req: AdminRequest) -> AdminReply:
            return await admin.dispatch(svc, req)

        return await _answer("admin", raw, metrics, AdminRequest, AdminReply, run)

    # No queue group: every replica hears every invalidation. One worker: they apply in order.
    @broker.subscriber(subjects.catalog_invalidated)
    async def invalidated(raw: Raw, svc: Service) -> None:
        """Something cached changed (on any replica): drop it from the shared answer cache too."""
        try:
            event = CacheInvalidated.model_validate_json(raw.body)
        except ValidationError:
            log.warning("ignored a malformed cache invalidation")
            return
        try:
            await svc.heard(event)
        except Exception:
            log.exception("applying a cache invalidation failed")
