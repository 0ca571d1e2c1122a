"""Background responses: runs the gateway carries to their end without a client, and stores.

The gateway that started a background response reads its run (:class:`BackgroundResponses`) and
stores the final ``Response`` when it ends. Any replica can also finish a stored response from the
run's events in RUN_EVENTS (:func:`finish_from_events`) — rendering is deterministic, so it stores
exactly what the owner would have: that is how a cancel answers with the final response on any
replica, and how a response whose gateway died is finished by a later ``GET`` (best effort: while
RUN_EVENTS still holds the run's events).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from ..errors import RunStreamError
from ..runs import RunReplay
from .history import finished_record
from .render import ResponseRenderer
from .sse import failed_event
from .store import ResponseStore, StoredResponse

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from contracts import RunEvent, Subjects

    from ..metrics import Metrics
    from ..orchestration import StartedRun

log = logging.getLogger(__name__)

#: Pauses between tries of a final write the store refused (it is the response's only record).
_WRITE_RETRIES = (0.2, 1.0, 3.0)


async def store_final(store: ResponseStore, record: StoredResponse) -> bool:
    """Write a finished response unless it was deleted meanwhile; whether it was written."""
    for pause in (*_WRITE_RETRIES, None):
        try:
            if await store.get(record.id) is None:
                return False  # deleted (or expired) while it ran: writing would bring it back
            await store.put(record)
            return True
        except Exception:
            if pause is None:
                log.error("storing the final state of response %s failed", record.id, exc_info=True)
                return False
            await asyncio.sleep(pause)
    return False


class BackgroundResponses:
    """The background responses this gateway carries (at most ``limit`` at once)."""

    def __init__(self, store: ResponseStore, *, idle_timeout_s: float, limit: int, metrics: Metrics) -> None:
        self._store = store
        self._idle_timeout_s = idle_timeout_s
        self._limit = limit
        self._metrics = metrics
        self._carried: dict[str, tuple[asyncio.Task[None], ResponseRenderer]] = {}

    def full(self) -> bool:
        return len(self._carried) >= self._limit

    def carry(self, started: StartedRun, record: StoredResponse) -> None:
        """Read the run to its end in the background and store the result."""
        renderer = ResponseRenderer(record.skeleton)
        renderer.begin()
        task = asyncio.create_task(self._carry(started, record, renderer), name=f"background-{record.id}")
        self._carried[record.id] = (task, renderer)

    def local(self, response_id: str) -> ResponseRenderer | None:
        """The renderer of a response this gateway is carrying (its state as it stands)."""
        entry = self._carried.get(response_id)
        return entry[1] if entry is not None else None

    async def wait(self, response_id: str, timeout_s: float) -> bool:
        """Wait until this gateway finished carrying the response; whether it did within ``timeout_s``."""
        entry = self._carried.get(response_id)
        if entry is None:
            return True
        done, _ = await asyncio.wait({entry[0]}, timeout=timeout_s)
        return bool(done)

    async def _carry(self, started: StartedRun, record: StoredResponse, renderer: ResponseRenderer) -> None:
        run = started.stream
        try:
            event: RunEvent = started.first
            while True:
                renderer.advance(event)
                if renderer.finished:
                    break
                try:
                    event = await run.next(self._idle_timeout_s)
                except RunStreamError as exc:
                    self._metrics.runs.labels(exc.info.code or "error").inc()
                    event = failed_event(run.run_id, exc.info)
            self._metrics.runs.labels(str(renderer.response.get("status"))).inc()
            await store_final(self._store, finished_record(record, renderer))
        except asyncio.CancelledError:
            # The gateway stops: the run goes on, and a GET on any replica finishes it from RUN_EVENTS.
            raise
        except Exception:
            log.exception("carrying background response %s failed", record.id)
        finally:
            self._carried.pop(record.id, None)
            await run.close()

    async def close(self) -> None:
        """Stop carrying (the gateway stops); the runs themselves are not cancelled."""
        tasks = [task for task, _ in self._carried.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def finish_from_events(
    js: JetStreamContext,
    subjects: Subjects,
    store: ResponseStore,
    record: StoredResponse,
    *,
    follow: bool,
    wait_s: float,
    deadline_s: float,
) -> StoredResponse:
    """Render a stored response from its run's events in RUN_EVENTS; store it if the run is over.

    ``follow`` false reads only what the stream holds now (a GET); true waits for the run's end, up
    to ``deadline_s`` (a cancel). Returns the record as rendered (unchanged when no event is kept).
    """
    replay = RunReplay(js, subjects, record.run_id)
    renderer = ResponseRenderer(record.skeleton)
    renderer.begin()
    seen = False
    try:
        async with asyncio.timeout(deadline_s):
            await replay.open(deadline_s)
            while not renderer.finished:
                renderer.advance(await replay.next(wait_s))
                seen = True
                if not follow and replay.caught_up:
                    break
    except (TimeoutError, RunStreamError):
        pass
    except Exception:
        log.warning("reading the events of response %s failed", record.id, exc_info=True)
    finally:
        await replay.close()
    if renderer.finished:
        final = finished_record(record, renderer)
        await store_final(store, final)
        return final
    if seen:
        return record.model_copy(update={"response": renderer.snapshot()})
    return record
