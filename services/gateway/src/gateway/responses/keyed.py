"""``POST /v1/responses`` with an ``Idempotency-Key``: what chat does (:mod:`gateway.idempotency`), for
responses that are not yet stored.

**The first request** creates the response with the key's run id and ``created`` (so its skeleton can
be made again from the body alone, :func:`keyed_skeleton`). A client that leaves before the run ends
does not cancel it: :class:`KeyedResponse` carries the run for the resume window (``GATEWAY_RESUME_WINDOW_S``),
rendering it. When it ends, the response is stored (or its ``store: false`` marker written) as if the
client had stayed. When the window passes first, the run is cancelled unless a retry attached meanwhile
(the entry's attachment counter moved, on any replica): then it is carried to its end and stored.

**A retry** of a response that is not stored (still running, or ``store: false``) is rendered from the
run's events (:func:`attach`): RUN_EVENTS from the first event, then live; past the RUN_EVENTS window,
the archive. Rendering is deterministic, so it is the same stream — sent after ``Last-Event-ID``, a
``sequence_number``, when the client gives one — or the same ``Response``. A retry that leaves neither
cancels the run nor stores anything: the first request's gateway does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from contracts import ErrorInfo, RunFailed

from .. import idempotency
from ..errors import ClientGone, GatewayError, JSONResponse, RunStreamError
from ..orchestration import RunSpec
from ..relay import empty_response, watch_disconnect
from ..runs import RunStream
from .render import ResponseRenderer
from .request import CreateResponseRequest, client_tools, tool_choice
from .service import ResponsesService, finish_answered, skeleton
from .sse import ResponseEventStream, failed_event
from .store import StoredResponse

if TYPE_CHECKING:
    from starlette.types import Receive

    from ..context import GatewayContext
    from ..idempotency import ResumeWindows

log = logging.getLogger(__name__)


def keyed_skeleton(response_id: str, body: CreateResponseRequest, created_at: int) -> dict[str, Any]:
    """The skeleton a keyed response was created with, made again from its request."""
    tools = client_tools(body)
    spec = RunSpec(messages=[], stream=bool(body.stream), tools=tools, tool_choice=tool_choice(body, tools))
    return skeleton(response_id, body, spec, created_at)


async def _render_to_end(source: Any, renderer: ResponseRenderer, idle_timeout_s: float) -> bool:
    """Read ``source`` into ``renderer`` until the run ends; whether it did (a broken stream did not)."""
    while not renderer.finished:
        try:
            event = await source.next(idle_timeout_s)
        except RunStreamError:
            return False
        renderer.advance(event)
    return True


class KeyedResponse:
    """The first request's hooks (:class:`~.service.Keyed`): a run whose client left is carried for the
    resume window; a run that ended is recorded in the key's entry (and archived)."""

    def __init__(
        self, ctx: GatewayContext, service: ResponsesService, windows: ResumeWindows, claimed: idempotency.Claim
    ) -> None:
        self._ctx = ctx
        self._service = service
        self._windows = windows
        self._key = claimed.key
        self._run_id = claimed.entry.run_id

    def left(self, run: RunStream, renderer: ResponseRenderer, record: StoredResponse) -> None:
        self._windows.spawn(self._keep(run, renderer, record), f"response-window-{run.run_id}")

    def ended(self) -> None:
        self._windows.finished(self._key, self._run_id)

    async def _keep(self, run: RunStream, renderer: ResponseRenderer, record: StoredResponse) -> None:
        windows, service, key = self._windows, self._service, self._key
        idle = self._ctx.settings.idle_timeout_s
        finished = False
        try:
            if windows.window_s > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(windows.window_s):
                        finished = await _render_to_end(run, renderer, idle)
            if not finished:
                if not await windows.attachments(key):  # nobody came back (0), or the entry is gone
                    log.info("response %s: nobody came back within %g s; cancelled", record.id, windows.window_s)
                    await run.cancel()
                    return
                finished = await _render_to_end(run, renderer, idle)  # a retry reads it: carry it to its end
            if finished:
                await finish_answered(service, record, renderer)
                windows.finished(key, run.run_id)
        except Exception:
            log.exception("the resume window of response %s failed; cancelling it", record.id)
            with contextlib.suppress(Exception):
                await run.cancel()
        finally:
            await run.close()


async def attach(
    ctx: GatewayContext,
    windows: ResumeWindows,
    body: CreateResponseRequest,
    claimed: idempotency.Claim,
    after_seq: int,
    receive: Receive,
) -> Response:
    """A retry of a keyed response that is not stored: its run's events rendered again (module docstring)."""
    settings, entry = ctx.settings, claimed.entry
    attached = await idempotency.attach(ctx.js, ctx.subjects, windows, claimed, settings)
    source, first = attached.source, attached.first
    renderer = ResponseRenderer(keyed_skeleton(entry.run_id, body, entry.created))
    if body.stream:

        async def on_close(finished: bool) -> None:
            await source.close()
            if finished:
                windows.finished(claimed.key, entry.run_id)  # a no-op when the run's end is recorded already

        return ResponseEventStream(
            source,
            renderer,
            run_id=entry.run_id,
            first=first,
            idle_timeout_s=settings.idle_timeout_s,
            metrics=ctx.metrics,
            starting_after=after_seq,
            on_close=on_close,
        )
    watcher = asyncio.create_task(watch_disconnect(receive, source))
    error: ErrorInfo | None = None
    try:
        renderer.begin()
        event = first
        while True:
            if type(event) is RunFailed:
                error = event.error
            renderer.advance(event)
            if renderer.finished:
                break
            try:
                event = await source.next(settings.idle_timeout_s)
            except RunStreamError as exc:
                event = failed_event(entry.run_id, exc.info)
    except ClientGone:
        return empty_response()  # type: ignore[no-any-return]
    finally:
        watcher.cancel()
        await source.close()
    windows.finished(claimed.key, entry.run_id)
    if error is not None and renderer.response.get("status") == "failed":
        raise GatewayError(error)  # as the first request answered it
    return JSONResponse(renderer.snapshot())
