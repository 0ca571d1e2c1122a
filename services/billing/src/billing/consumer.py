"""The USAGE consumer: batches from JetStream into the ledger, acked only after the commit.

Why plain nats-py ``pull_subscribe`` + ``fetch`` rather than a FastStream subscriber: a batch is ONE
database transaction, and no message of it may be acked before that commit. A handler-per-message
framework acks (or not) each message on its own and hides the batch; here the loop owns the whole
cycle — fetch ≤ ``batch`` → decode → one transaction → commit → ack every message. On a database
error nothing was committed: every message is nak'ed with a delay and comes back; the unique
(run_id, call_index) key makes a re-application (after a commit whose ack was lost) a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from pydantic import ValidationError

from contracts import TRACEPARENT_HEADER, RunClosed, Subjects, UsageRecorded
from servicekit.natsio import context_from_headers

log = logging.getLogger(__name__)
tracer = trace.get_tracer("billing")

Apply = Callable[[list[UsageRecorded], list[RunClosed]], Awaitable[int]]


class UsageConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        apply: Apply,
        *,
        batch: int = 256,
        ack_wait_s: float = 60.0,
        retry_delay_s: float = 1.0,
        linger_s: float = 0.02,
    ) -> None:
        self.js = js
        self.linger_s = linger_s
        self.ack_wait_s = ack_wait_s
        self.retry_delay_s = retry_delay_s
        self.subjects = subjects
        self.apply = apply
        self.batch = batch
        self.applied = 0
        self.batches = 0
        self.idle_polls = 0
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
                ack_wait=self.ack_wait_s,
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
        """Fetch the next batch while the current one is written (its acks still wait for its commit)."""
        pending: asyncio.Task[list[Msg]] | None = None
        try:
            while not self._stopping.is_set():
                if pending is None:
                    pending = asyncio.create_task(self._fetch(sub))
                try:
                    msgs = await pending
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's: nothing to do
                    self.idle_polls += 1
                    continue
                except Exception:  # a NATS hiccup (reconnect): back off, never lose the loop
                    log.exception("fetching usage failed; retrying")
                    await asyncio.sleep(0.5)
                    continue
                finally:
                    pending = None
                if not msgs:  # nats-py can return an empty batch
                    continue
                if not self._stopping.is_set():
                    pending = asyncio.create_task(self._fetch(sub))
                await self._handle(msgs)
        finally:
            if pending is not None:  # prefetched but never applied: hand it straight back (nak, no delay)
                if pending.done() and not pending.cancelled() and pending.exception() is None:
                    await asyncio.gather(*(_quietly(m.nak()) for m in pending.result()))
                else:
                    pending.cancel()
                    await asyncio.gather(pending, return_exceptions=True)

    async def _fetch(self, sub) -> list[Msg]:  # type: ignore[no-untyped-def]
        """Up to ``batch`` messages: wait (0.5 s) for the first, then top up for at most ``linger_s``.

        One nats-py fetch returns what happens to have arrived (often a few dozen); a transaction
        costs about the same for 20 rows as for 256, so filling the batch is most of the throughput.
        """
        msgs: list[Msg] = await sub.fetch(self.batch, timeout=0.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while msgs and len(msgs) < self.batch and (left := deadline - loop.time()) > 0:
            try:
                more = await sub.fetch(self.batch - len(msgs), timeout=left)
            except TimeoutError:
                break
            if not more:
                break
            msgs.extend(more)
        return msgs

    async def _handle(self, msgs: list[Msg]) -> None:
        records: list[UsageRecorded] = []
        closes: list[RunClosed] = []
        poison: list[Msg] = []
        for m in msgs:
            try:
                if m.subject == self.subjects.usage_run_closed:
                    closes.append(RunClosed.model_validate_json(m.data))
                else:
                    records.append(UsageRecorded.model_validate_json(m.data))
            except ValidationError:
                poison.append(m)
        start = time.time_ns()
        with tracer.start_as_current_span("ledger.batch") as span:
            span.set_attribute("billing.batch.size", len(msgs))
            try:
                written = await self.apply(records, closes)
            except Exception as exc:
                # Nothing committed: let every message come back (after a pause), then retry.
                log.warning("applying a usage batch of %d failed (%s); it will be redelivered", len(msgs), exc)
                span.record_exception(exc)
                await self._settle_all(msgs, "nak")
                await asyncio.sleep(self.retry_delay_s / 2)
                return
            span.set_attribute("billing.ledger.written", written)
        _trace_each(msgs, start)
        for m in poison:
            log.error("dropping an undecodable usage message on %s (seq %s)", m.subject, m.metadata.sequence.stream)
            await _quietly(m.term())
        await self._settle_all([m for m in msgs if m not in poison], "ack")
        self.applied += written
        self.batches += 1

    async def _settle_all(self, msgs: list[Msg], how: str) -> None:
        """Ack (after the commit) or nak every message. A failure here loses nothing: an unacked message
        comes back after ``ack_wait`` and is absorbed by the unique key."""
        if how == "ack":
            await asyncio.gather(*(_quietly(m.ack()) for m in msgs))
        else:
            await asyncio.gather(*(_quietly(m.nak(delay=self.retry_delay_s)) for m in msgs))

    def stop(self) -> None:
        self._stopping.set()


async def _quietly(op: Awaitable[None]) -> None:
    try:
        await op
    except Exception as exc:  # NATS reconnecting: the message is redelivered, the ledger absorbs it
        log.warning("acknowledging a usage message failed: %s", exc)


def _trace_each(msgs: list[Msg], start_ns: int) -> None:
    """One ``ledger.write`` span per message that carries a trace, in that message's own trace."""
    for m in msgs:
        if not m.headers or TRACEPARENT_HEADER not in m.headers:
            continue
        span = tracer.start_span("ledger.write", context=context_from_headers(m.headers), start_time=start_ns)
        span.set_attribute("messaging.destination", m.subject)
        span.end()
