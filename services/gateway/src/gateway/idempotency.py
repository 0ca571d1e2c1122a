"""``Idempotency-Key``: a retried POST never starts a second run, and a chat stream a client can resume.

**The record.** One entry per (user, key) in the namespace's ``IDEMPOTENCY`` JetStream key-value bucket
(TTL 24 h by default, shared by every gateway replica; no Redis needed, the gateway depends on NATS
already). The entry's key is ``sha256(user id, key)`` — the client's key is never stored; its value
(:class:`Entry`) holds the body's digest, the run id, the API, ``created`` and the run's status.

**Claiming.** A request with a key creates its entry with KV ``create`` (succeeds only if the key is
absent) *before* it starts the run, with the run id it is about to use and status ``starting``. Two
replicas racing on one key agree on one run: the loser reads the winner's entry and attaches to its
run. A request refused before its run started (402, 413, 503…) deletes the entry, so it stores
nothing and a retry may start afresh; a racing retry that waited on a ``starting`` entry which then
disappears claims the key itself. The same key with another body is a 422.

**Attaching.** A retry of a claimed key reads the run's events from RUN_EVENTS (:class:`AttachedRun`,
over :class:`gateway.runs.RunReplay`) — from the first, or after ``Last-Event-ID`` — then live, and
renders them with the same renderer and the same ``id``/``created``: byte for byte what one stream
carries, on any replica.

**After the RUN_EVENTS window.** The first gateway to see a keyed run end (the stream that carried it,
or a resume window's keeper) records it in the entry (``completed``) and archives the run's events —
read once more from RUN_EVENTS — in the ``IDEMPOTENCY_RESULTS`` object store (:class:`ResultArchive`,
chunked, so no message size limit; same TTL as the keys). A retry whose events RUN_EVENTS no longer
holds is rendered from the archive through the same renderer: still the same frames, the same body.

**The resume window.** A keyed run whose client disconnects is not cancelled at once: the gateway
that was streaming it keeps reading it (:class:`ResumeWindows`) for ``GATEWAY_RESUME_WINDOW_S``. Each
attachment increments the entry's ``attachments`` counter (a KV compare-and-set), and each stream
remembers the count it attached at. When a window passes with the run unfinished, its keeper reads
the entry: if the count is still its own, nobody came back (on any replica) and it cancels the run
(the runner bills what was consumed); otherwise a newer stream carries the run, and that stream's own
window decides when it goes. The timer therefore never depends on the original gateway seeing the
retry: the KV entry is the one place every replica writes and reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError, ObjectNotFoundError
from pydantic import BaseModel, ConfigDict, ValidationError

from contracts import RUN_EVENT, CancelRun, ErrorInfo, RunEvent, Subjects
from servicekit.natsio import read_object

from .errors import INVALID_REQUEST, ClientGone, GatewayError, RunStreamError
from .runs import RunReplay

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext
    from nats.js.kv import KeyValue
    from nats.js.object_store import ObjectStore

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
LAST_EVENT_ID = "Last-Event-ID"
MAX_KEY_LENGTH = 255
#: Compare-and-set tries before an update of an entry gives up (replicas writing one entry at once).
_CAS_TRIES = 8
#: Pause between reads of an entry another request is still starting.
_STARTING_POLL_S = 0.05

Status = Literal["starting", "live", "completed", "failed"]
Api = Literal["chat.completions", "responses"]


def bucket_name(namespace: str) -> str:
    """The namespace's idempotency bucket (named like its streams)."""
    return Subjects(namespace).idempotency_bucket


def results_bucket_name(namespace: str) -> str:
    """The namespace's object store of finished keyed runs' events."""
    return Subjects(namespace).idempotency_results_bucket


def read_key(headers: Mapping[str, str]) -> str | None:
    """The request's ``Idempotency-Key``: 1 to 255 printable ASCII characters; 400 otherwise."""
    key = headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
        raise GatewayError.bad_request(
            f"The '{HEADER}' header must be 1 to {MAX_KEY_LENGTH} printable ASCII characters.",
            HEADER,
            "invalid_idempotency_key",
        )
    return key


def read_last_event_id(headers: Mapping[str, str]) -> int:
    """The ``Last-Event-ID`` a resuming client sends (the ``id:`` of the last frame it got); -1 when absent."""
    raw = headers.get(LAST_EVENT_ID)
    if raw is None or not raw.strip():
        return -1
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > 2**31 - 1:
        raise GatewayError.bad_request(
            f"The '{LAST_EVENT_ID}' header must be the id of a frame of this stream (a non-negative integer).",
            LAST_EVENT_ID,
        )
    return int(raw)


def entry_key(user_id: str, key: str) -> str:
    """The entry's KV key: a digest of the user and their key (scoped per user, the key never stored)."""
    return hashlib.sha256(f"{user_id}\0{key}".encode()).hexdigest()


def body_digest(raw: bytes) -> str:
    """A digest of the request body that ignores its formatting and key order."""
    try:
        canonical = orjson.dumps(orjson.loads(raw), option=orjson.OPT_SORT_KEYS)
    except orjson.JSONDecodeError:
        canonical = raw
    return hashlib.sha256(canonical).hexdigest()


class Entry(BaseModel):
    """What the bucket holds for one (user, key)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    v: int = 1
    body: str
    run_id: str
    api: Api
    created: int
    status: Status = "starting"
    #: Streams that attached to the run after the first (the resume window's counter).
    attachments: int = 0


def _unavailable(exc: BaseException | None = None) -> GatewayError:
    if exc is not None and not isinstance(exc, TimeoutError):
        log.warning("the idempotency store failed", exc_info=exc)
    return GatewayError.unavailable("The idempotency store is unavailable; try again shortly.")


def _mismatch() -> GatewayError:
    return GatewayError.of(
        422,
        f"This '{HEADER}' was already used with a different request body; use a new key for a new request.",
        INVALID_REQUEST,
        "idempotency_key_reused",
        HEADER,
    )


class IdempotencyStore:
    """The entries, read and written within ``timeout_s`` (a 503 otherwise)."""

    def __init__(self, kv: KeyValue, timeout_s: float) -> None:
        self._kv = kv
        self._timeout_s = timeout_s

    async def get(self, key: str) -> tuple[Entry, int] | None:
        """The entry and its revision; ``None`` when absent (or unreadable)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                found = await self._kv.get(key)
        except (KeyNotFoundError, NotFoundError):
            return None
        except Exception as exc:
            raise _unavailable(exc) from exc
        if not found.value:
            return None
        try:
            return Entry.model_validate_json(found.value), int(found.revision or 0)
        except ValidationError:
            log.warning("an unreadable idempotency entry is treated as absent")
            return None

    async def create(self, key: str, entry: Entry) -> bool:
        """Create the entry if the key is absent; whether this call created it."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._kv.create(key, entry.model_dump_json().encode())
        except KeyWrongLastSequenceError:
            return False
        except Exception as exc:
            raise _unavailable(exc) from exc
        return True

    async def update(self, key: str, change: Callable[[Entry], Entry]) -> Entry | None:
        """Apply ``change`` to the entry (compare-and-set, retried on a concurrent write); ``None``
        when the entry is gone."""
        for _ in range(_CAS_TRIES):
            found = await self.get(key)
            if found is None:
                return None
            entry, revision = found
            changed = change(entry)
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._kv.update(key, changed.model_dump_json().encode(), last=revision)
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:
                raise _unavailable(exc) from exc
            return changed
        raise _unavailable()

    async def finish(self, key: str, status: Status) -> bool:
        """Record the run's end; whether this call did (false: already recorded, or the entry is gone)."""
        for _ in range(_CAS_TRIES):
            found = await self.get(key)
            if found is None or found[0].status in ("completed", "failed"):
                return False
            entry, revision = found
            try:
                async with asyncio.timeout(self._timeout_s):
                    data = entry.model_copy(update={"status": status}).model_dump_json().encode()
                    await self._kv.update(key, data, last=revision)
            except KeyWrongLastSequenceError:
                continue
            except Exception as exc:
                raise _unavailable(exc) from exc
            return True
        return False

    async def delete(self, key: str) -> None:
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._kv.delete(key)
        except Exception as exc:
            raise _unavailable(exc) from exc


@dataclass(frozen=True)
class Claim:
    """A key claimed for a request: ``owner`` true when this request starts the run."""

    key: str
    entry: Entry
    owner: bool


async def claim(
    store: IdempotencyStore, key: str, digest: str, api: Api, run_id: str, *, starting_wait_s: float
) -> Claim:
    """Claim ``key`` for a new run (``run_id``), or find the run it already has (module docstring).

    An entry still ``starting`` (another request is starting its run) is waited on up to
    ``starting_wait_s``: it becomes live (attach), or disappears (the start was refused: claim again)."""
    fresh = Entry(body=digest, run_id=run_id, api=api, created=int(time.time()))
    deadline = time.monotonic() + starting_wait_s
    while True:
        if await store.create(key, fresh):
            return Claim(key, fresh, owner=True)
        found = await store.get(key)
        if found is None:
            # Deleted (a refused start) or expired between the two calls: claim it. An entry that stays
            # unreadable must not spin this loop: it ends with the wait.
            if time.monotonic() >= deadline:
                raise _unavailable()
            await asyncio.sleep(_STARTING_POLL_S)
            continue
        entry = found[0]
        if entry.body != digest or entry.api != api:
            raise _mismatch()
        if entry.status != "starting" or time.monotonic() >= deadline:
            return Claim(key, entry, owner=False)
        await asyncio.sleep(_STARTING_POLL_S)  # a KV entry has no awaitable change


async def cancel_run(nc: Client, subjects: Subjects, run_id: str, reason: str = "client_disconnected") -> None:
    """Tell the run's runner to stop (core NATS, best effort): it bills what was consumed."""
    msg = CancelRun(run_id=run_id, reason=reason)  # type: ignore[arg-type]
    with contextlib.suppress(Exception):
        await nc.publish(subjects.run_cancel(run_id), msg.model_dump_json().encode())


class AttachedRun:
    """A run this request did not start, read from RUN_EVENTS then live (:class:`RunReplay`), with what
    the relay needs of an event source: its client's departure wakes :meth:`next`."""

    def __init__(
        self, js: JetStreamContext, subjects: Subjects, run_id: str, *, buffer_bytes: int | None = None
    ) -> None:
        self.run_id = run_id
        self._replay = RunReplay(js, subjects, run_id, buffer_bytes=buffer_bytes)
        self._gone = asyncio.Event()

    @property
    def overflowed(self) -> bool:
        """Whether its client fell more than ``buffer_bytes`` behind (:class:`RunReplay`)."""
        return self._replay.overflowed

    @property
    def on_overflow(self) -> Callable[[], None] | None:
        return self._replay.on_overflow

    @on_overflow.setter
    def on_overflow(self, value: Callable[[], None] | None) -> None:
        self._replay.on_overflow = value

    async def open(self, timeout_s: float) -> None:
        await self._replay.open(timeout_s)

    async def next(self, wait_s: float) -> RunEvent:
        if self._gone.is_set():
            raise ClientGone
        reading = asyncio.ensure_future(self._replay.next(wait_s))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({reading, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not reading.done():
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reading
            raise ClientGone
        return reading.result()

    def buffered(self) -> bool:
        return False

    def client_gone(self) -> None:
        self._gone.set()

    def keep_reading(self) -> None:
        """Read on after the client left (the resume window)."""
        self._gone.clear()

    async def close(self) -> None:
        await self._replay.close()


class ArchivedRun:
    """A finished run's events from the :class:`ResultArchive`, as an event source for the relay."""

    def __init__(self, run_id: str, events: list[RunEvent]) -> None:
        self.run_id = run_id
        self._events = deque(events)
        self._gone = False

    async def next(self, wait_s: float) -> RunEvent:
        if self._gone:
            raise ClientGone
        if not self._events:
            raise RunStreamError(
                ErrorInfo(status=500, type="server_error", message="The archived run ends early.", code="event_gap")
            )
        return self._events.popleft()

    def buffered(self) -> bool:
        return bool(self._events)

    def client_gone(self) -> None:
        self._gone = True

    async def close(self) -> None:
        self._events.clear()


class ResultArchive:
    """Finished keyed runs' events, one object per entry key (JSON lines), read and written within
    ``timeout_s``."""

    def __init__(self, objects: ObjectStore, timeout_s: float) -> None:
        self._objects = objects
        self._timeout_s = timeout_s

    async def put(self, key: str, events: list[RunEvent]) -> None:
        data = b"\n".join(e.model_dump_json().encode() for e in events)
        async with asyncio.timeout(self._timeout_s):
            await self._objects.put(key, data)

    async def get(self, key: str) -> list[RunEvent] | None:
        """The archived events; ``None`` when there are none (never archived, or expired)."""
        try:
            async with asyncio.timeout(self._timeout_s):
                data = await read_object(self._objects, key)
        except (ObjectNotFoundError, NotFoundError):
            return None
        except Exception as exc:
            raise _unavailable(exc) from exc
        try:
            return [RUN_EVENT.validate_json(line) for line in data.split(b"\n") if line]
        except ValidationError:
            log.warning("an unreadable archived run is treated as missing")
            return None


async def read_whole_run(js: JetStreamContext, subjects: Subjects, run_id: str, *, wait_s: float) -> list[RunEvent]:
    """Every event of a run from RUN_EVENTS, to its end (an error if it is not all there)."""
    replay = RunReplay(js, subjects, run_id)
    events: list[RunEvent] = []
    try:
        await replay.open(wait_s)
        while not events or events[-1].type not in ("completed", "failed"):
            events.append(await replay.next(wait_s))
    finally:
        await replay.close()
    return events


class ResumeWindows:
    """What the keyed routes share (``app.state.idempotency``): the entries, the archive, and the runs
    whose client left, kept going for the resume window (module docstring)."""

    def __init__(
        self,
        store: IdempotencyStore,
        nc: Client,
        subjects: Subjects,
        *,
        window_s: float,
        idle_timeout_s: float,
        js: JetStreamContext | None = None,
        archive: ResultArchive | None = None,
    ) -> None:
        self.store = store
        self.archive = archive
        self._js = js
        self._nc = nc
        self._subjects = subjects
        self._window_s = window_s
        self._idle_timeout_s = idle_timeout_s
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def window_s(self) -> float:
        return self._window_s

    def keep(self, source: KeptRun, key: str, attachment: int) -> None:
        """Keep reading ``source`` (its client gone) until its run ends or the window passes."""
        self.spawn(self._keep(source, key, attachment), f"resume-window-{source.run_id}")

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` in the background until it ends or the gateway stops (a route's own keeper)."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def attachments(self, key: str) -> int | None:
        """The entry's attachment counter now; ``None`` when it cannot be read."""
        entry = await self._entry(key)
        return entry.attachments if entry is not None else None

    async def _keep(self, source: KeptRun, key: str, attachment: int) -> None:
        finished = False
        loop = asyncio.get_running_loop()
        until = loop.time() + self._window_s
        try:
            if self._window_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._window_s):
                        finished = await self._drain(source)
            if finished:
                self.finished(key, source.run_id)
                return
            if (left := until - loop.time()) > 0:
                # The stream broke here (a gap, no event in time), not the run: it may go on, and a
                # retry of its key reads it from RUN_EVENTS on any gateway. It is stopped only once
                # the window has passed with nobody resuming it.
                await asyncio.sleep(left)
            entry = await self._entry(key)
            if entry is not None and entry.attachments != attachment:
                return  # a newer stream carries the run: its own window decides
            log.info("run %s: nobody resumed it within %g s; cancelled", source.run_id, self._window_s)
            await cancel_run(self._nc, self._subjects, source.run_id)
        except Exception:
            log.exception("the resume window of run %s failed; cancelling it", source.run_id)
            await cancel_run(self._nc, self._subjects, source.run_id)
        finally:
            await source.close()

    async def _drain(self, source: KeptRun) -> bool:
        """Read the run to its end; whether it ended (a broken stream is not an end)."""
        while True:
            try:
                event = await source.next(self._idle_timeout_s)
            except RunStreamError:
                return False
            if event.type in ("completed", "failed"):
                return True

    def finished(self, key: str, run_id: str) -> None:
        """A keyed run ended: record it, and archive its events (the first gateway to record it does)."""
        task = asyncio.create_task(self._finished(key, run_id), name=f"idempotency-archive-{run_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finished(self, key: str, run_id: str) -> None:
        try:
            if not await self.store.finish(key, "completed") or self.archive is None or self._js is None:
                return
            events = await read_whole_run(self._js, self._subjects, run_id, wait_s=self._idle_timeout_s)
            await self.archive.put(key, events)
        except Exception:
            # Best effort: within the RUN_EVENTS window a retry is answered from there all the same.
            log.warning("archiving keyed run %s failed", run_id, exc_info=True)

    async def archived(self, key: str, run_id: str) -> ArchivedRun | None:
        """The run's archived events as an event source, if it was archived."""
        if self.archive is None:
            return None
        events = await self.archive.get(key)
        return ArchivedRun(run_id, events) if events else None

    async def _entry(self, key: str) -> Entry | None:
        try:
            found = await self.store.get(key)
        except GatewayError:
            return None
        return found[0] if found is not None else None

    async def close(self) -> None:
        """The gateway stops: stop keeping (the runs are left to end on their own)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class KeptRun(Protocol):
    """What a resume window reads: the live :class:`~gateway.runs.RunStream` or an :class:`AttachedRun`."""

    run_id: str

    async def next(self, wait_s: float) -> RunEvent: ...

    async def close(self) -> None: ...


#: How long a retry waits for a finished run's first event in RUN_EVENTS before trying the archive.
REPLAY_FIRST_WAIT_S = 2.0


@dataclass
class Attached:
    """A retry attached to its key's run: where its events come from, the first of them, and which
    attachment this is (the entry's counter after this retry counted itself)."""

    source: AttachedRun | ArchivedRun
    first: RunEvent
    attachment: int


async def attach(
    js: JetStreamContext, subjects: Subjects, windows: ResumeWindows, claimed: Claim, settings: AttachSettings
) -> Attached:
    """Attach a retry to the run its key started (both APIs): count the attachment first (a resume
    window that passes from now on leaves the run to this retry), then read the run's events from
    RUN_EVENTS and live; past the RUN_EVENTS window, the events archived as the run ended. 409
    (:func:`expired`) when neither has them."""
    entry = claimed.entry
    updated = await windows.store.update(claimed.key, lambda e: e.model_copy(update={"attachments": e.attachments + 1}))
    attachment = updated.attachments if updated is not None else entry.attachments + 1
    source: AttachedRun | ArchivedRun
    source = AttachedRun(js, subjects, entry.run_id, buffer_bytes=settings.stream_buffer_bytes)
    # The first event is in RUN_EVENTS at once unless it expired; a run just started may take a moment.
    first_wait = settings.queue_timeout_s if entry.status in ("starting", "live") else REPLAY_FIRST_WAIT_S
    try:
        await source.open(settings.rpc_timeout_s)
        first = await source.next(min(first_wait, settings.idle_timeout_s))
    except (RunStreamError, TimeoutError) as exc:
        await source.close()
        archived = await windows.archived(claimed.key, entry.run_id)
        if archived is None:
            raise expired() from exc
        source = archived
        first = await source.next(0)
    except BaseException:
        await source.close()
        raise
    return Attached(source, first, attachment)


class AttachSettings(Protocol):
    """The settings :func:`attach` reads (the gateway's)."""

    stream_buffer_bytes: int
    queue_timeout_s: float
    rpc_timeout_s: float
    idle_timeout_s: float


def expired() -> GatewayError:
    """A retry whose run's events are no longer kept."""
    return GatewayError.of(
        409,
        f"The result of the request made with this '{HEADER}' is no longer kept; use a new key to run it again.",
        INVALID_REQUEST,
        "idempotency_result_expired",
        HEADER,
    )
