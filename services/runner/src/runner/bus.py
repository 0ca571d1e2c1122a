"""The NATS side of a run (:class:`runner.agent.RunPorts`): events on core NATS, usage on JetStream,
reservation extensions by request/reply."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from pydantic import ValidationError

from contracts import ExtendReply, ExtendRequest, RunClosed, Subjects, UsageRecorded
from contracts.subjects import MSG_ID_HEADER
from servicekit.natsio import trace_headers

from .errors import BillingUnavailable
from .metrics import Metrics

log = logging.getLogger(__name__)

_BACKOFF_START_S = 0.05
_BACKOFF_MAX_S = 2.0


class NatsPorts:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        subjects: Subjects,
        metrics: Metrics,
        *,
        publish_timeout_s: float,
        billing_timeout_s: float,
    ) -> None:
        self._nc = nc
        self._js = js
        self._subjects = subjects
        self._metrics = metrics
        self._publish_timeout_s = publish_timeout_s
        self._billing_timeout_s = billing_timeout_s

    async def publish_event(self, run_id: str, data: bytes) -> None:
        # Core NATS: a delta must not wait for a JetStream ack (≈ 3,000/s) on the hot path.
        await self._nc.publish(self._subjects.run_events(run_id), data)

    async def record_usage(self, record: UsageRecorded) -> None:
        await self._publish_money(self._subjects.usage_recorded, record.model_dump_json().encode(), record.msg_id)

    async def close_run(self, closed: RunClosed) -> None:
        await self._publish_money(self._subjects.usage_run_closed, closed.model_dump_json().encode(), closed.msg_id)

    async def _publish_money(self, subject: str, data: bytes, msg_id: str) -> None:
        """Publish to USAGE and wait for the ack; retry with backoff until stored (money is never
        dropped; the message id makes a retried publish harmless)."""
        delay = _BACKOFF_START_S
        while True:
            try:
                await self._js.publish(
                    subject, data, timeout=self._publish_timeout_s, headers=trace_headers({MSG_ID_HEADER: msg_id})
                )
                return
            except (nats.errors.Error, TimeoutError) as exc:
                self._metrics.usage_publish_retries.inc()
                log.warning("usage publish %s failed (%s); retrying in %.2fs", msg_id, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def extend(self, request: ExtendRequest) -> ExtendReply:
        try:
            msg = await self._nc.request(
                self._subjects.billing_extend,
                request.model_dump_json().encode(),
                timeout=self._billing_timeout_s,
                headers=trace_headers(),
            )
        except (nats.errors.Error, TimeoutError) as exc:
            raise BillingUnavailable(type(exc).__name__) from None
        try:
            return ExtendReply.model_validate_json(msg.data)
        except ValidationError:
            raise BillingUnavailable("invalid reply") from None
