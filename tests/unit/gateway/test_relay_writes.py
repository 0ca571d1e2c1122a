"""How many writes a stream costs: the opening frames (chat's role chunk, Responses' ``created`` and
``in_progress``) go out with the first event's frames in one body message, not one each."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from contracts import RunCompleted, RunEvent, TextDelta
from gateway.metrics import Metrics
from gateway.relay import ChatStreamResponse
from gateway.render import ChunkRenderer
from gateway.responses.render import ResponseRenderer
from gateway.responses.sse import ResponseEventStream
from tests.unit.gateway.test_responses_render import skeleton

RUN = "run-writes"


class Source:
    """A run whose events are all here already except the last, which comes after a pause."""

    def __init__(self, *events: RunEvent) -> None:
        self.events = list(events)

    def buffered(self) -> bool:
        return len(self.events) > 1

    async def next(self, timeout_s: float) -> RunEvent:
        if len(self.events) == 1:
            await asyncio.sleep(0.01)
        return self.events.pop(0)


async def _bodies(response: Any) -> list[bytes]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    await response({"type": "http"}, receive, send)
    assert sent[0]["type"] == "http.response.start"
    return [m["body"] for m in sent[1:]]


async def _closed(finished: bool, gone: bool) -> None:
    return None


def _chat(source: Source, first: RunEvent, after_seq: int = -1) -> ChatStreamResponse:
    return ChatStreamResponse(
        source,
        first,
        ChunkRenderer("chatcmpl-1", 0, "agent", include_usage=False),
        idle_timeout_s=5,
        metrics=Metrics(),
        started_at=time.perf_counter(),
        after_seq=after_seq,
        on_close=_closed,
    )


async def test_a_chat_streams_role_chunk_goes_out_with_its_first_delta() -> None:
    source = Source(TextDelta(run_id=RUN, seq=2, delta=" there"), RunCompleted(run_id=RUN, seq=3))
    bodies = await _bodies(_chat(source, TextDelta(run_id=RUN, seq=1, delta="Hi")))
    assert len(bodies) == 2  # role, "Hi" and " there" together; then the end
    first = bodies[0].decode()
    assert first.index('"role":"assistant"') < first.index('"Hi"') < first.index('" there"')
    assert bodies[1].rstrip().endswith(b"data: [DONE]")


async def test_a_resumed_chat_stream_sends_no_role_chunk_again() -> None:
    source = Source(RunCompleted(run_id=RUN, seq=3))
    bodies = await _bodies(_chat(source, TextDelta(run_id=RUN, seq=2, delta=" there"), after_seq=2))
    assert b"".join(bodies).count(b"data: ") == 2  # the finish chunk and [DONE]: nothing up to seq 2


async def test_a_responses_streams_opening_events_go_out_with_its_first_delta() -> None:
    source = Source(TextDelta(run_id=RUN, seq=2, delta=" there"), RunCompleted(run_id=RUN, seq=3))
    stream = ResponseEventStream(
        source,
        ResponseRenderer(skeleton()),
        run_id=RUN,
        first=TextDelta(run_id=RUN, seq=1, delta="Hi"),
        idle_timeout_s=5,
        metrics=Metrics(),
        started_at=time.perf_counter(),
    )
    bodies = await _bodies(stream)
    assert len(bodies) == 2  # created, in_progress, the message's opening and both deltas; then the end
    first = bodies[0].decode()
    assert first.index("response.created") < first.index("response.in_progress") < first.index('"Hi"')
    assert b"response.completed" in bodies[1]
