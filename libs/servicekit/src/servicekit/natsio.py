"""NATS helpers: connecting, the JetStream streams, and W3C trace context in message headers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Literal, TypeVar

import nats
from nats.aio.client import DEFAULT_INBOX_PREFIX, Client
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    ObjectStoreConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError, ServiceUnavailableError
from nats.js.kv import KeyValue
from nats.js.object_store import OBJ_CHUNKS_PRE_TEMPLATE, OBJ_DIGEST_TEMPLATE, ObjectStore
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context

from contracts import Subjects

from . import telemetry
from .throttledlog import ThrottledLog

log = logging.getLogger(__name__)


#: How long the events of a run stay readable after they were published (RUN_EVENTS), unless
#: ``SWITCHBOARD_RUN_EVENTS_MAX_AGE_S`` says otherwise. Long enough to resume a background response's
#: stream a while after its run ended (the Responses API), short enough to bound the stream's size.
RUN_EVENTS_MAX_AGE_S = 900.0
#: The environment variable that sets the RUN_EVENTS window. Every service creates the streams, so it
#: is one shared variable (not one per service): two services with different windows would keep
#: overwriting each other's stream configuration.
RUN_EVENTS_MAX_AGE_ENV = "SWITCHBOARD_RUN_EVENTS_MAX_AGE_S"
#: RUN_EVENTS holds at most this much; the oldest events go first.
RUN_EVENTS_MAX_BYTES = 1024**3


async def connect(
    url: str,
    name: str,
    *,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
    user: str | None = None,
    password: str | None = None,
    inbox_prefix: str | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> Client:
    """Connect with reconnects forever (a service outlives a NATS restart); ``on_reconnected`` runs
    after every reconnect (core subscriptions are already renewed then). ``user`` and ``password``
    (a service's ``settings.nats_credentials()``) win over credentials in the URL; replies then arrive
    under ``inbox_prefix``, the one its user may read. ``on_error`` hears, after they are logged, the
    errors the server reports without closing the connection (a permissions violation: see
    :func:`permission_denied`); it must not wait (it runs in the connection's reader)."""
    # A server away for a minute is tried again four times a second, each try an error.
    errors = ThrottledLog(log)

    async def error_cb(error: Exception) -> None:
        errors.log(logging.ERROR, type(error).__name__, "NATS reported: %s: %s", type(error).__name__, error)
        if on_error is not None:
            on_error(error)

    nc: Client | None = None

    async def disconnected_cb() -> None:
        if nc is not None and nc.is_closed:
            return  # closed on purpose (the service stops): nothing to reconnect
        log.warning("disconnected from NATS; reconnecting")

    async def reconnected_cb() -> None:
        log.info("reconnected to NATS")
        if on_reconnected is not None:
            await on_reconnected()

    nc = await nats.connect(
        error_cb=error_cb,
        disconnected_cb=disconnected_cb,
        servers=[u.strip() for u in url.split(",")],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.25,
        connect_timeout=5,
        reconnected_cb=reconnected_cb,
        user=user,
        password=password,
        inbox_prefix=inbox_prefix or DEFAULT_INBOX_PREFIX,
    )
    return nc


def permission_denied(error: Exception, action: Literal["publish", "subscription"], subject: str) -> bool:
    """Whether ``error``, heard by a connection's ``on_error``, is the server refusing ``action`` on a
    subject starting with ``subject`` (nats-py reports ``nats: permissions violation for publish to
    "<subject>"``; the server does not answer the publish itself)."""
    text = str(error).lower()
    return "permissions violation" in text and f'{action} to "{subject.lower()}' in text


async def wait_connected(nc: Client, timeout_s: float) -> bool:
    """Whether ``nc`` is connected, waiting up to ``timeout_s`` while it reconnects (a NATS restart
    takes a second or two: a request made meanwhile waits for it rather than failing at once)."""
    if nc.is_connected:
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    # nats-py has no awaitable "connected again"; this polls only while the connection is down.
    while not nc.is_connected and not nc.is_closed and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    return nc.is_connected


async def flush_in_order(nc: Client, timeout_s: float = 5.0) -> None:
    """Return once the server has processed everything ``nc`` sent before this call (subscriptions
    made, messages published): what another connection does next comes after them.

    ``nc.flush()`` alone does not promise that. nats-py (2.x, pinned) writes its PING straight to
    the socket, ahead of the commands still queued for its flusher task. Under load, the PONG can
    come back before the server has read a SUB made just before the flush. A message that another
    connection publishes then finds no subscriber. Here the queue is written first, then the PING
    follows it on the wire (``tests/integration/servicekit/test_flush_in_order.py`` fails should nats-py
    change)."""
    async with asyncio.timeout(timeout_s):
        await nc._flush_pending(force_flush=True)
    await nc.flush(timeout=timeout_s)  # type: ignore[arg-type]  # nats-py annotates int; it takes seconds


def run_events_max_age_s() -> float:
    """The RUN_EVENTS window in seconds: ``SWITCHBOARD_RUN_EVENTS_MAX_AGE_S`` (at least 60), else the default."""
    raw = os.environ.get(RUN_EVENTS_MAX_AGE_ENV, "").strip()
    if not raw:
        return RUN_EVENTS_MAX_AGE_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{RUN_EVENTS_MAX_AGE_ENV} must be a number of seconds, not {raw!r}") from None
    if value < 60:
        raise ValueError(f"{RUN_EVENTS_MAX_AGE_ENV} must be at least 60 seconds (a gateway reads missed events there)")
    return value


def stream_configs(subjects: Subjects, *, replicas: int = 1) -> list[StreamConfig]:
    """The JetStream streams of one namespace. RUNS buffers bursts (work queue, dedupe by run id);
    USAGE is money (file storage, dedupe window, long retention: billing acks after its commit);
    RUN_EVENTS keeps every run's events for a short while (file storage, so they outlive a NATS
    restart), where a gateway reads again what it missed. Runners publish events on core NATS: the
    stream captures them without a publish acknowledgement on the per-token path.

    Each stream has ``replicas`` copies (``NATS_STREAM_REPLICAS``): on a three-node cluster, 3 keeps
    every stream writable and its data whole while any one node is down."""
    return [
        StreamConfig(
            name=subjects.run_events_stream,
            subjects=[subjects.run_events_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=run_events_max_age_s(),
            max_bytes=RUN_EVENTS_MAX_BYTES,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.runs_stream,
            subjects=[subjects.run_request],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            duplicate_window=120.0,
            max_age=3600.0,
            discard=DiscardPolicy.OLD,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.usage_stream,
            subjects=[subjects.usage_all],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            duplicate_window=3600.0,
            max_age=30 * 24 * 3600.0,
            num_replicas=replicas,
        ),
    ]


#: How long a service waits at its start for JetStream to answer (a NATS cluster started beside it is
#: still electing its leaders) before it gives up and exits.
JETSTREAM_READY_WITHIN_S = 60.0
_NOT_YET_ANSWERING = (NatsTimeout, NoRespondersError, ServiceUnavailableError)
_T = TypeVar("_T")


async def _once_answering(step: Callable[[], Awaitable[_T]], what: str, ready_within_s: float) -> _T:
    """``step()``, asked again while JetStream does not answer yet (no meta leader or no quorum, as in a
    cluster whose servers start with the services), for up to ``ready_within_s``: a service that starts
    first waits for its NATS instead of exiting into a restart back-off. Every JetStream asset a
    service creates at its start goes through here: each is a (replicated) stream."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_within_s
    pause = 0.1
    while True:
        try:
            return await step()
        except _NOT_YET_ANSWERING as exc:
            if loop.time() + pause > deadline:
                raise
            log.warning("JetStream is not answering yet (%s on %s); asking again", type(exc).__name__, what)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)


async def ensure_streams(
    js: JetStreamContext, subjects: Subjects, *, replicas: int = 1, ready_within_s: float = JETSTREAM_READY_WITHIN_S
) -> None:
    """Create the streams, or bring their configuration up to date, ``replicas`` included (idempotent;
    every service may call it, so every service must be given the same ``NATS_STREAM_REPLICAS``); while
    JetStream does not answer yet, for up to ``ready_within_s`` (:func:`_once_answering`)."""

    async def apply(config: StreamConfig) -> None:
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)

    for config in stream_configs(subjects, replicas=replicas):
        await _once_answering(partial(apply, config), f"stream {config.name}", ready_within_s)


async def ensure_object_store(
    js: JetStreamContext,
    bucket: str,
    *,
    ttl_s: float,
    replicas: int = 1,
    description: str | None = None,
    ready_within_s: float = JETSTREAM_READY_WITHIN_S,
) -> ObjectStore:
    """The object store ``bucket``, created or brought up to date (its TTL and replicas), idempotently;
    while JetStream does not answer yet, for up to ``ready_within_s`` (:func:`_once_answering`).

    Objects are chunked by the store (128 KiB messages), so an object has no NATS message size limit.
    """
    config = ObjectStoreConfig(description=description, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE)
    return await _ensure_bucket(
        js,
        lambda: js.create_object_store(bucket, config=config),
        lambda: js.object_store(bucket),
        f"OBJ_{bucket}",
        ttl_s,
        replicas,
        ready_within_s,
    )


#: Reads of an object that was replaced as it was read start over, at most this many times in all.
READ_ATTEMPTS = 3


class ObjectReplacedError(Exception):
    """An object kept changing while it was read."""


def object_digest(data: bytes) -> str:
    """The digest an object store's meta records for an object's bytes."""
    return OBJ_DIGEST_TEMPLATE.format(digest=base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode())


async def read_object(store: ObjectStore, name: str) -> bytes:
    """An object's bytes: its meta, then each chunk fetched by its subject. Raises nats-py's
    ``ObjectNotFoundError`` when there is none (or it was deleted).

    nats-py's ``ObjectStore.get`` reads the chunks through an ordered consumer. When the object is
    replaced as it reads, the old chunks are purged under it, and it waits for them forever. Here a
    purged chunk is "not found" at once, and the read starts over from the new meta, at most
    :data:`READ_ATTEMPTS` times. It also takes one request per chunk instead of a consumer made and
    removed (0.6 ms a small object here, against 1.5–1.7)."""
    js, stream, bucket = store._js, store._stream, store._name
    for _ in range(READ_ATTEMPTS):
        info = await store.get_info(name)
        if not info.size or not info.nuid:
            return b""
        subject = OBJ_CHUNKS_PRE_TEMPLATE.format(bucket=bucket, obj=info.nuid)
        parts: list[bytes] = []
        seq = 1
        try:
            for _ in range(info.chunks or 1):
                msg = await js.get_msg(stream, seq, subject=subject, next=True)
                parts.append(msg.data or b"")
                seq = (msg.seq or seq) + 1
        except NotFoundError:
            continue  # replaced or deleted while it was read
        data = b"".join(parts)
        if object_digest(data) == info.digest:
            return data
    raise ObjectReplacedError(f"object {name} changed {READ_ATTEMPTS} times while it was read")


async def ensure_key_value(
    js: JetStreamContext,
    bucket: str,
    *,
    ttl_s: float,
    replicas: int = 1,
    description: str | None = None,
    ready_within_s: float = JETSTREAM_READY_WITHIN_S,
) -> KeyValue:
    """The key-value bucket ``bucket`` (one value per key, file storage), created or brought up to date
    (its TTL and replicas), idempotently; while JetStream does not answer yet, for up to
    ``ready_within_s`` (:func:`_once_answering`). Values are single NATS messages (at most its maximum payload)."""
    config = KeyValueConfig(
        bucket=bucket, description=description, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE, history=1
    )
    return await _ensure_bucket(
        js,
        lambda: js.create_key_value(config=config),
        lambda: js.key_value(bucket),
        f"KV_{bucket}",
        ttl_s,
        replicas,
        ready_within_s,
    )


async def _ensure_bucket(
    js: JetStreamContext,
    create: Callable[[], Awaitable[_T]],
    existing: Callable[[], Awaitable[_T]],
    stream: str,
    ttl_s: float,
    replicas: int,
    ready_within_s: float,
) -> _T:
    """A bucket (object store or key-value) over its stream ``stream``: created, or — when it exists
    with another configuration — its TTL and replicas changed (the stream keeps its data) and opened."""

    async def apply() -> _T:
        try:
            return await create()
        except BadRequestError:
            info = await js.stream_info(stream)
            current = info.config
            current.max_age = ttl_s
            current.num_replicas = replicas
            await js.update_stream(current)
            return await existing()

    return await _once_answering(apply, f"bucket {stream}", ready_within_s)


def trace_headers(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers carrying the current span's W3C trace context (``traceparent``), plus ``extra``. With
    no span and no baggage (tracing off, or a message outside any span) every propagator writes
    nothing, so none is asked: this is on the path of every run and every usage record."""
    headers: dict[str, str] = dict(extra or {})
    current = otel_context.get_current()
    if trace.get_current_span(current).get_span_context().is_valid or baggage.get_all(current):
        propagate.inject(headers, context=current)
    return headers


def context_from_headers(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The trace context a message's headers carry (empty context when none)."""
    return telemetry.extract(headers)


async def wait_until_answering(nc: Client, subject: str, payload: bytes, timeout: float = 5.0) -> None:
    """Ask ``subject`` until it answers: a service's own subscriptions are then routable for every
    client (a flush alone proved not enough on some servers, which briefly answered "no responders")."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            await nc.request(subject, payload, timeout=1.0)
            return
        except (NoRespondersError, NatsTimeout):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.02)
