"""The USAGE consumer: batches from JetStream into the ledger, acked only after the commit.

Plain nats-py ``pull_subscribe`` + ``fetch``: a batch is one database transaction, and nothing of a
batch may be acked before that commit — a handler-per-message framework would hide the batch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ValidationError

from contracts import RunClosed, Subjects, UsageRecorded
from servicekit.natsio import context_from_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("billing")

Apply = Callable[[list[UsageRecorded], list[RunClosed]], Awaitable[int]]


class UsageConsumer:
    def __init__(self, js: JetStreamContext, subjects: Subjects, apply: Apply, *, batch: int = 512) -> None:
        self.js = js
        self.subjects = subjects
        self.apply = apply
        self.batch = batch
        self.applied = 0
        self.batches = 0
        self.crashed = False
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        sub = await self.js.pull_subscribe(
            self.subjects.usage_all,
            durable=self.subjects.usage_consumer,
            stream=self.subjects.usage_stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,  # money: ack each message only after its batch committed
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=60,
                max_ack_pending=20_000,
                max_deliver=-1,
            ),
        )
        try:
            await self._loop(sub)
        except BaseException:
            self.crashed = True  # /readyz reports it, so the orchestrator restarts the process
            raise
        finally:
            await sub.unsubscribe()

    async def _loop(self, sub) -> None:  # type: ignore[no-untyped-def]
        while not self._stopping.is_set():
            try:
                msgs = await sub.fetch(self.batch, timeout=0.5)
            except TimeoutError:  # nats' own TimeoutError is one too: nothing to fetch
                continue
            except Exception:  # a NATS hiccup (reconnect): back off, never lose the loop
                log.exception("fetching usage failed; retrying")
                await asyncio.sleep(0.5)
                continue
            if msgs:  # nats-py can return an empty batch
                await self._handle(msgs)

    async def _handle(self, msgs: list) -> None:  # type: ignore[type-arg]
        records: list[UsageRecorded] = []
        closes: list[RunClosed] = []
        poison = []
        for m in msgs:
            try:
                if m.subject == self.subjects.usage_run_closed:
                    closes.append(RunClosed.model_validate_json(m.data))
                else:
                    records.append(UsageRecorded.model_validate_json(m.data))
            except ValidationError:
                poison.append(m)
        first = msgs[0]
        with tracer.start_as_current_span("ledger.write", context=context_from_headers(first.headers)) as span:
            span.set_attribute("billing.batch.size", len(msgs))
            for m in msgs[1:]:
                linked = trace.get_current_span(context_from_headers(m.headers)).get_span_context()
                if linked.is_valid:
                    span.add_link(linked)
            try:
                written = await self.apply(records, closes)
            except Exception:
                # Nothing committed: let every message come back (after a pause), then retry.
                log.exception("applying a usage batch failed; it will be redelivered")
                for m in msgs:
                    await m.nak(delay=1)
                await asyncio.sleep(0.5)
                return
            span.set_attribute("billing.ledger.written", written)
        for m in poison:
            log.error("dropping an undecodable usage message on %s (seq %s)", m.subject, m.metadata.sequence.stream)
            await m.term()
        for m in msgs:
            if m not in poison:
                await m.ack()
        self.applied += written
        self.batches += 1

    def stop(self) -> None:
        self._stopping.set()
