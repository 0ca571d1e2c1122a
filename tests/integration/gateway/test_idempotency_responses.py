"""Idempotency-Key on ``POST /v1/responses`` while the run is live, against a real NATS (KV, RUN_EVENTS)
with scripted runs: a retry attaches to the run — the same stream from its first event or after
``Last-Event-ID`` (a sequence number), on another gateway too, or the same ``Response`` once it ends —
never a second run; a client that leaves does not cancel a keyed run until the resume window passes."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx
import pytest

from contracts import ErrorInfo, RunFailed, TextDelta
from tests.integration.gateway.conftest import RunContext, Stack

# The chat tests' settings (a fixture, found by pytest by name).
from tests.integration.gateway.test_idempotency import (  # noqa: F401
    Paced,
    headers,
    read_frames,
    settings_overrides,
)

pytestmark = pytest.mark.integration

AGENT = "agent_paced_responses"
BODY: dict[str, Any] = {"model": AGENT, "input": "hi"}
STREAM = dict(BODY, stream=True)


def events(raw: bytes) -> list[dict[str, Any]]:
    out = []
    for frame in raw.split(b"\n\n"):
        for line in frame.split(b"\n"):
            if line.startswith(b"data: "):
                out.append(json.loads(line[6:]))
    return out


async def read_events(url: str, key: str, count: int) -> bytes:
    """Stream until ``count`` whole events came, then drop the connection."""
    return await read_frames(url, key, count, path="/v1/responses", body=STREAM)


async def until(check: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def test_a_stream_retry_while_live_attaches_on_another_gateway(stack: Stack, second: str) -> None:
    paced = Paced()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http, httpx.AsyncClient(base_url=second, timeout=10) as other:
        first = asyncio.ensure_future(http.post("/v1/responses", json=STREAM, headers=headers("live-stream")))
        await until(lambda: stack.fakes.run_requests)
        await asyncio.sleep(0.3)  # the first deltas are out; the run waits for the gate
        retry = asyncio.ensure_future(other.post("/v1/responses", json=STREAM, headers=headers("live-stream")))
        await asyncio.sleep(0.5)
        assert not first.done() and not retry.done()  # the retry waits on the live run, no 409
        paced.gate.set()
        whole, again = await first, await retry
    assert whole.status_code == 200 and again.status_code == 200, again.text
    assert again.content == whole.content  # the same stream, byte for byte, from its first event
    assert events(whole.content)[-1]["type"] == "response.completed"
    assert len(stack.fakes.run_requests) == 1
    assert not stack.fakes.cancels


async def test_a_whole_retry_while_live_waits_for_the_same_response(stack: Stack) -> None:
    paced = Paced()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        first = asyncio.ensure_future(http.post("/v1/responses", json=BODY, headers=headers("live-whole")))
        await until(lambda: stack.fakes.run_requests)
        retry = asyncio.ensure_future(http.post("/v1/responses", json=BODY, headers=headers("live-whole")))
        await asyncio.sleep(0.5)
        assert not retry.done()
        paced.gate.set()
        answer, again = await first, await retry
        stored = await http.get(f"/v1/responses/{answer.json()['id']}", headers=headers(None))
    assert answer.status_code == 200 and again.status_code == 200, again.text
    assert again.json() == answer.json()
    assert answer.json()["status"] == "completed" and answer.json()["output"][0]["content"][0]["text"] == (
        "one two three"
    )
    assert stored.json() == answer.json()
    assert len(stack.fakes.run_requests) == 1


async def test_a_dropped_stream_resumes_after_last_event_id(stack: Stack, second: str) -> None:
    paced = Paced()
    stack.fakes.agent(AGENT, paced)
    head = await read_events(stack.url, "resume-resp", 4)
    last = events(head)[-1]["sequence_number"]
    await asyncio.sleep(0.3)
    assert not stack.fakes.cancels  # the client left; the keyed run goes on for the window
    async with httpx.AsyncClient(base_url=second, timeout=10) as other:
        rest = asyncio.ensure_future(
            other.post("/v1/responses", json=STREAM, headers=headers("resume-resp", last_event_id=last))
        )
        await asyncio.sleep(0.3)
        paced.gate.set()
        tail = await rest
        assert tail.status_code == 200, tail.text
        # Once it ended (and was stored): the whole stream again from its first event.
        whole = await other.post("/v1/responses", json=STREAM, headers=headers("resume-resp"))
    assert head + tail.content == whole.content
    assert events(tail.content)[0]["sequence_number"] == last + 1
    assert events(whole.content)[-1]["type"] == "response.completed"
    # The gateway whose client left stored the response when its run ended.
    response_id = events(whole.content)[0]["response"]["id"]
    async with stack.http() as http:
        stored = await http.get(f"/v1/responses/{response_id}", headers=headers(None))
    assert stored.status_code == 200 and stored.json()["status"] == "completed"
    assert len(stack.fakes.run_requests) == 1 and not stack.fakes.cancels


async def test_a_store_false_retry_after_the_end_gets_the_same_response(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    body = dict(BODY, store=False)
    async with stack.http() as http:
        first = await http.post("/v1/responses", json=body, headers=headers("unstored"))
        again = await http.post("/v1/responses", json=body, headers=headers("unstored"))
        streamed = await http.post("/v1/responses", json=dict(body, stream=True), headers=headers("unstored-s"))
        restreamed = await http.post("/v1/responses", json=dict(body, stream=True), headers=headers("unstored-s"))
    assert first.status_code == 200 and again.status_code == 200, again.text
    assert again.json() == first.json()
    assert restreamed.status_code == 200 and restreamed.content == streamed.content
    assert len(stack.fakes.run_requests) == 2


class TestNobodyComesBack:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"idle_timeout_s": 10.0, "resume_window_s": 0.5}

    async def test_the_run_is_cancelled_after_the_window(self, stack: Stack) -> None:
        stack.fakes.agent(AGENT, Paced())  # never released
        loop = asyncio.get_running_loop()
        await read_events(stack.url, "resp-gone", 4)
        left = loop.time()
        async with asyncio.timeout(5):
            await stack.fakes.cancelled.wait()
        assert loop.time() - left >= 0.4  # not at once: the window ran first
        (cancel,) = stack.fakes.cancels
        assert cancel.run_id == stack.fakes.run_requests[0].run_id

    async def test_without_a_key_a_disconnect_cancels_at_once(self, stack: Stack) -> None:
        stack.fakes.agent(AGENT, Paced())
        got = b""
        async with (
            stack.http() as http,
            http.stream("POST", "/v1/responses", json=STREAM, headers=headers(None)) as resp,
        ):
            async for chunk in resp.aiter_raw():
                got += chunk
                if got.count(b"\n\n") >= 4:
                    break
        async with asyncio.timeout(0.4):
            await stack.fakes.cancelled.wait()


class PacedFailure(Paced):
    """Two deltas, the gate, then the provider fails."""

    async def __call__(self, run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="one ")
        await self.gate.wait()
        await run.emit(RunFailed, error=ErrorInfo(status=502, type="server_error", message="Broke.", code="broke"))


async def test_a_whole_retry_of_a_run_that_failed_after_its_client_left_is_its_error(stack: Stack) -> None:
    """A keyed response whose client left is carried, and stored when it ends — failed ones too now.
    A retry still answers as the first request would have: the run's error, not a 200 ``failed``."""
    paced = PacedFailure()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        first = asyncio.ensure_future(http.post("/v1/responses", json=BODY, headers=headers("failed-whole")))
        await until(lambda: stack.fakes.run_requests)
        await asyncio.sleep(0.3)
        first.cancel()  # the client leaves; the keyed run goes on for the window
        with contextlib.suppress(asyncio.CancelledError):
            await first
        paced.gate.set()
        response_id = stack.fakes.run_requests[0].run_id
        store = stack.app.state.responses.store
        async with asyncio.timeout(5):
            while (record := await store.get(response_id)) is None:
                await asyncio.sleep(0.05)
        assert record.status == "failed"
        again = await http.post("/v1/responses", json=BODY, headers=headers("failed-whole"))
        stored = await http.get(f"/v1/responses/{response_id}", headers=headers(None))
    assert again.status_code == 502, again.text
    assert again.json()["error"]["message"] == "Broke."
    assert stored.status_code == 200 and stored.json()["status"] == "failed"
    assert len(stack.fakes.run_requests) == 1
