"""The USAGE consumer: batches from JetStream into the ledger, acked only after the commit.

Why plain nats-py ``pull_subscribe`` + ``fetch`` rather than a FastStream subscriber: a batch is ONE
database transaction, and no message of it may be acked before that commit. A handler-per-message
framework acks (or not) each message on its own and hides the batch; here the loop owns the whole
cycle — fetch ≤ ``batch`` → decode → one transaction → commit → ack every message. The unique
(run_id, call_index) key makes a re-application (after a commit whose ack was lost) a no-op.

No single message may stop the consumer (issue #8: one record that PostgreSQL refused used to fail
its batch, and every later batch that picked it up, forever). So a failed batch is judged by
:func:`billing.faults.classify`:

- the database is at fault (unreachable, restarting): nothing was committed; every message is
  nak'ed with a delay and comes back — the batch is retried whole, as before;
- the data is at fault: the batch is applied again in halves, and each half that fails in halves
  again, down to the record(s) at fault; every part that commits is acked at once. A record the
  database refuses on its own is parked. Happy batches stay one transaction; each bad record costs
  about log2(batch) more.
- neither is known (a bug): the same halving, but the record at fault is nak'ed alone (retried,
  never parked), so the rest of the batch goes on.

Before any of that, what can never be applied — a message that does not decode, an identity or an
amount no column holds (:mod:`billing.sanitize`) — is parked at once (:mod:`billing.deadletters`:
raw bytes kept, then ``term()``), never retried, never blocking anyone. Metadata that does not fit
(an over-long or NUL-holding conversation id) never fails a batch: the ledger cleans it and bills
the money. Parked messages are counted (``billing_usage_dead_letters_total``) and reported by
``/readyz``, which stays 200: billing works for everyone else (see services/billing/README.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from prometheus_client import Counter

from contracts import TRACEPARENT_HEADER, RunClosed, Subjects, UsageRecorded
from servicekit import telemetry
from servicekit.natsio import context_from_headers

from .deadletters import DeadLetter
from .faults import Fault, classify, describe
from .sanitize import close_fault, record_fault

log = logging.getLogger(__name__)
tracer = trace.get_tracer("billing")

DEAD_LETTERS = Counter(
    "billing_usage_dead_letters", "Usage messages parked in usage_dead_letters: not billed, each needs an operator"
)

#: A batch lingering for more records fetches them after pauses of a fifth of its linger, at most
#: 20 ms (see ``UsageConsumer._fetch``).
TOPUPS = 5
TOPUP_PAUSE_MAX_S = 0.02
#: The last top-up's wait for the server's answer, once the batch's linger is over.
LAST_TOPUP_S = 0.005

Apply = Callable[[list[UsageRecorded], list[RunClosed]], Awaitable[int]]
Park = Callable[[list[DeadLetter]], Awaitable[int]]
Item = tuple[Msg, UsageRecorded | RunClosed]


class UsageConsumer:
    def __init__(
        self,
        js: JetStreamContext,
        subjects: Subjects,
        apply: Apply,
        park: Park,
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
        self.park = park
        self.batch = batch
        self.applied = 0
        self.batches = 0
        self.idle_polls = 0
        self.parked = 0  # dead letters written by this process
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
            self.crashed = True  # /healthz (liveness) fails, so the orchestrator restarts the process
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
        Each top-up pauses first (a fifth of ``linger_s``, at most 20 ms): a fetch is one or two pull
        requests to the server whatever it brings back, and fetched at once, records that trickle in
        came one or two a fetch.
        """
        msgs: list[Msg] = await sub.fetch(self.batch, timeout=0.5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_s
        while msgs and len(msgs) < self.batch and (left := deadline - loop.time()) > 0:
            await asyncio.sleep(min(self.linger_s / TOPUPS, TOPUP_PAUSE_MAX_S, left))
            try:
                # What came meanwhile; at the deadline, only what is there already.
                more = await sub.fetch(self.batch - len(msgs), timeout=max(deadline - loop.time(), LAST_TOPUP_S))
            except TimeoutError:
                break
            if not more:
                break
            msgs.extend(more)
        return msgs

    async def _handle(self, msgs: list[Msg]) -> None:
        items: list[Item] = []
        faulty: list[tuple[Msg, str]] = []  # to park, with why
        for m in msgs:
            decoded = self._decode(m)
            if isinstance(decoded, str):
                faulty.append((m, decoded))
            else:
                items.append((m, decoded))
        start, applied = time.time_ns(), self.applied
        with tracer.start_as_current_span("ledger.batch") as span:
            span.set_attribute("billing.batch.size", len(msgs))
            try:
                acked, retry = await self._apply_isolating(items, faulty)
            except _Unavailable as exc:
                # Nothing left was committed: let it all come back (after a pause), then retry.
                log.warning("applying a usage batch of %d failed (%s); it will be redelivered", len(msgs), exc.cause)
                span.record_exception(exc.cause)
                await self._settle_all(exc.msgs + [m for m, _ in faulty], "nak")
                await asyncio.sleep(self.retry_delay_s / 2)
                return
            span.set_attribute("billing.ledger.written", self.applied - applied)
        _trace_each(acked, start)
        await self._settle_all(retry, "nak")
        await self._park(faulty)

    def _decode(self, m: Msg) -> UsageRecorded | RunClosed | str:
        """The message's event, or why it can never be applied (then it is parked)."""
        try:
            if m.subject == self.subjects.usage_run_closed:
                close = RunClosed.model_validate_json(m.data)
                return close_fault(close) or close
            record = UsageRecorded.model_validate_json(m.data)
        except Exception as exc:  # not JSON, not the model, or whatever a hostile payload does to a parser
            return f"undecodable: {exc}"
        return record_fault(record) or record

    async def _apply_isolating(self, items: list[Item], faulty: list[tuple[Msg, str]]) -> tuple[list[Msg], list[Msg]]:
        """Apply ``items`` in one transaction; if the data is at fault, in halves down to the record(s)
        at fault (see the module docstring). Acks each part once it is committed.

        Returns (the messages acked, the messages to nak alone); appends what the database refused to
        ``faulty``. Raises :class:`_Unavailable` (with every message not yet committed) when the
        database is at fault.
        """
        acked: list[Msg] = []
        retry: list[Msg] = []
        parts = deque([items] if items else [])
        while parts:
            part = parts.popleft()
            records = [e for _, e in part if isinstance(e, UsageRecorded)]
            closes = [e for _, e in part if isinstance(e, RunClosed)]
            try:
                written = await self.apply(records, closes)
            except Exception as exc:
                fault = classify(exc)
                if fault is Fault.TRANSIENT:
                    raise _Unavailable(exc, [m for p in (part, *parts) for m, _ in p]) from exc
                if len(part) > 1:
                    if len(part) == len(items):
                        log.warning(
                            "a usage batch of %d was refused (%s: %s); applying it in parts",
                            len(part),
                            fault.value,
                            describe(exc),
                        )
                    mid = len(part) // 2
                    parts.extendleft((part[mid:], part[:mid]))
                    continue
                msg = part[0][0]
                if fault is Fault.DATA:
                    faulty.append((msg, f"refused by the database: {describe(exc)}"))
                else:
                    log.error("a usage message (seq %s) failed on its own; it will be retried", _seq(msg), exc_info=exc)
                    retry.append(msg)
                continue
            await self._settle_all([m for m, _ in part], "ack")
            acked.extend(m for m, _ in part)
            self.applied += written
            self.batches += 1
        return acked, retry

    async def _park(self, faulty: list[tuple[Msg, str]]) -> None:
        """Write the dead letters, then ``term()`` their messages; if the write fails they come back."""
        if not faulty:
            return
        try:
            await self.park([DeadLetter.of(m, error) for m, error in faulty])
        except Exception:
            log.exception("parking %d usage message(s) failed; they will be redelivered", len(faulty))
            await self._settle_all([m for m, _ in faulty], "nak")
            return
        for m, error in faulty:
            log.error("parked usage message seq %s on %s (NOT billed): %s", _seq(m), m.subject, error[:500])
        await asyncio.gather(*(_quietly(m.term()) for m, _ in faulty))
        self.parked += len(faulty)
        DEAD_LETTERS.inc(len(faulty))

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


class _Unavailable(Exception):
    """The database is at fault: ``msgs`` (not committed) must be retried."""

    def __init__(self, cause: Exception, msgs: list[Msg]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.msgs = msgs


def _seq(m: Msg) -> int | None:
    try:
        return m.metadata.sequence.stream
    except Exception:  # a message without JetStream metadata (a test's fake): no sequence to show
        return None


def _trace_each(msgs: list[Msg], start_ns: int) -> None:
    """One ``ledger.write`` span per message that carries a trace, in that message's own trace."""
    for m in msgs:
        if not m.headers or TRACEPARENT_HEADER not in m.headers:
            continue
        parent = context_from_headers(m.headers)
        if not telemetry.records(tracer, parent):
            continue  # a span nobody could see: nothing to write
        span = tracer.start_span(
            "ledger.write",
            context=parent,
            kind=SpanKind.CONSUMER,
            start_time=start_ns,
            attributes={
                "messaging.system": "nats",
                "messaging.operation.type": "process",
                "messaging.destination.name": m.subject,
            },
        )
        span.end()
