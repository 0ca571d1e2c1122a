"""Idempotency-Key on the chat route and resumable chat streams, against a real NATS (KV, RUN_EVENTS)
with scripted runs: a retry never starts a second run; a stream resumes after ``Last-Event-ID`` on
another gateway, byte for byte; a client that never comes back has its run cancelled after the window."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from nats.js.errors import NotFoundError

from contracts import RunCompleted, TextDelta
from gateway.idempotency import bucket_name, entry_key, results_bucket_name
from tests.integration.gateway.conftest import BROKE_KEY, KEY, RunContext, Stack
from tests.integration.gateway.test_chat_stream import fail_midway

pytestmark = pytest.mark.integration

AGENT = "agent_paced"
BODY: dict[str, Any] = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # A long idle timeout: the scripted run pauses (no heartbeats) while a test reconnects.
    return {"idle_timeout_s": 10.0, "resume_window_s": 5.0}


class Paced:
    """A scripted run that sends two deltas, waits for ``gate``, then finishes."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()

    async def __call__(self, run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="one ")
        await run.emit(TextDelta, delta="two ")
        await self.gate.wait()
        await run.emit(TextDelta, delta="three")
        await run.emit(RunCompleted)


def headers(key: str | None, last_event_id: int | None = None, api_key: str = KEY) -> dict[str, str]:
    out = {"Authorization": f"Bearer {api_key}"}
    if key is not None:
        out["Idempotency-Key"] = key
    if last_event_id is not None:
        out["Last-Event-ID"] = str(last_event_id)
    return out


def frame_ids(raw: bytes) -> list[int]:
    return [int(f.split(b"\n", 1)[0][4:]) for f in raw.split(b"\n\n") if f.startswith(b"id: ")]


async def read_frames(
    url: str, key: str, count: int, *, path: str = "/v1/chat/completions", body: dict[str, Any] | None = None
) -> bytes:
    """Read the stream (of ``body`` to ``path``, a chat stream by default) until ``count`` whole frames
    came, then drop the connection."""
    got = b""
    async with (
        httpx.AsyncClient(base_url=url, timeout=10) as http,
        http.stream("POST", path, json=BODY if body is None else body, headers=headers(key)) as resp,
    ):
        assert resp.status_code == 200
        async for chunk in resp.aiter_raw():
            got += chunk
            if got.count(b"\n\n") >= count:
                break
    return got[: _nth_end(got, count)]


def _nth_end(data: bytes, count: int) -> int:
    end = 0
    for _ in range(count):
        end = data.index(b"\n\n", end) + 2
    return end


async def test_stream_resumes_after_last_event_id_on_another_gateway(stack: Stack, second: str) -> None:
    paced = Paced()
    stack.fakes.agent(AGENT, paced)
    # The first client reads the role frame and the first delta, then its connection drops.
    head = await read_frames(stack.url, "resume-1", 2)
    assert frame_ids(head) == [0, 1]
    paced.gate.set()
    async with httpx.AsyncClient(base_url=second, timeout=10) as http:
        rest = await http.post("/v1/chat/completions", json=BODY, headers=headers("resume-1", 1))
        # Without Last-Event-ID: the whole stream again, from its first frame.
        whole = await http.post("/v1/chat/completions", json=BODY, headers=headers("resume-1"))
    assert rest.status_code == 200 and whole.status_code == 200
    assert head + rest.content == whole.content
    assert frame_ids(rest.content)[0] == 2
    assert whole.content.endswith(b"data: [DONE]\n\n")
    assert len(stack.fakes.run_requests) == 1  # one run, however many attached
    assert not stack.fakes.cancels  # the disconnect did not cancel it
    # The same as what one uninterrupted stream (without a key) carries, ids and all, but for its run id.
    async with stack.http() as http:
        plain = await http.post("/v1/chat/completions", json=BODY, headers=headers(None))
    run_ids = [r.run_id for r in stack.fakes.run_requests]
    normalised = plain.content.replace(run_ids[1].encode(), run_ids[0].encode())
    assert _without_created(normalised) == _without_created(whole.content)


def _without_created(raw: bytes) -> bytes:
    import re

    return re.sub(rb'"created":\d+', b'"created":0', raw)


async def test_retry_after_completion_returns_the_same_body_and_starts_nothing(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    body = dict(BODY, stream=False)
    async with stack.http() as http:
        first = await http.post("/v1/chat/completions", json=body, headers=headers("whole-1"))
        again = await http.post("/v1/chat/completions", json=body, headers=headers("whole-1"))
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert first.json()["choices"][0]["message"]["content"] == "one two three"
    assert len(stack.fakes.run_requests) == 1
    assert len(stack.fakes.admit_requests) == 1  # one charge


async def test_same_key_with_another_body_is_a_422(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        ok = await http.post("/v1/chat/completions", json=dict(BODY, stream=False), headers=headers("reuse-1"))
        other = dict(BODY, stream=False, messages=[{"role": "user", "content": "something else"}])
        clash = await http.post("/v1/chat/completions", json=other, headers=headers("reuse-1"))
    assert ok.status_code == 200
    assert clash.status_code == 422
    error = clash.json()["error"]
    assert error["param"] == "Idempotency-Key" and error["code"] == "idempotency_key_reused"
    assert error["type"] == "invalid_request_error"
    assert len(stack.fakes.run_requests) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\tinside", "caf\u00e9"])
async def test_a_bad_key_is_a_400(stack: Stack, key: str) -> None:
    stack.fakes.agent(AGENT, Paced())
    async with stack.http() as http:
        resp = await http.post(
            "/v1/chat/completions",
            json=BODY,
            headers={"Authorization": f"Bearer {KEY}", "Idempotency-Key": key.encode()},  # type: ignore[dict-item],
        )
    assert resp.status_code == 400
    assert resp.json()["error"]["param"] == "Idempotency-Key"
    assert not stack.fakes.run_requests


async def test_a_refused_request_stores_nothing(stack: Stack) -> None:
    stack.fakes.agent(AGENT, Paced())
    async with stack.http() as http:
        resp = await http.post("/v1/chat/completions", json=BODY, headers=headers("broke-1", api_key=BROKE_KEY))
    assert resp.status_code == 402
    kv = await stack.nc.jetstream().key_value(bucket_name(stack.subjects.namespace))
    with pytest.raises(NotFoundError):  # never written, or deleted as the request was refused
        await kv.get(entry_key("u_carol", "broke-1"))


async def test_racing_retries_start_one_run(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    body = dict(BODY, stream=False)
    async with stack.http() as http:
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=body, headers=headers("race-1")) for _ in range(4))
        )
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len({a.text for a in answers}) == 1
    assert len(stack.fakes.run_requests) == 1


class TestNobodyComesBack:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"idle_timeout_s": 10.0, "resume_window_s": 0.5}

    async def test_run_is_cancelled_after_the_window(self, stack: Stack) -> None:
        stack.fakes.agent(AGENT, Paced())  # never released: the run would go on forever
        loop = asyncio.get_running_loop()
        await read_frames(stack.url, "gone-1", 2)
        left = loop.time()
        async with asyncio.timeout(5):
            await stack.fakes.cancelled.wait()
        waited = loop.time() - left
        assert waited >= 0.4, waited  # not at once: the window ran first
        (cancel,) = stack.fakes.cancels
        assert cancel.run_id == stack.fakes.run_requests[0].run_id
        assert cancel.reason == "client_disconnected"

    async def test_without_a_key_a_disconnect_cancels_at_once(self, stack: Stack) -> None:
        stack.fakes.agent(AGENT, Paced())
        got = b""
        async with (
            stack.http() as http,
            http.stream("POST", "/v1/chat/completions", json=BODY, headers=headers(None)) as resp,
        ):
            async for chunk in resp.aiter_raw():
                got += chunk
                if got.count(b"\n\n") >= 2:
                    break
        async with asyncio.timeout(0.4):  # well within what the window would have been
            await stack.fakes.cancelled.wait()


RESPONSE_BODY: dict[str, Any] = {"model": AGENT, "input": "hi"}


async def test_responses_retry_returns_the_stored_response_once_charged(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        first = await http.post("/v1/responses", json=RESPONSE_BODY, headers=headers("resp-1"))
        again = await http.post("/v1/responses", json=RESPONSE_BODY, headers=headers("resp-1"))
        streamed = await http.post("/v1/responses", json=dict(RESPONSE_BODY, stream=True), headers=headers("resp-2"))
        restreamed = await http.post("/v1/responses", json=dict(RESPONSE_BODY, stream=True), headers=headers("resp-2"))
        clash = await http.post("/v1/responses", json=dict(RESPONSE_BODY, input="other"), headers=headers("resp-1"))
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.json() == first.json() and first.json()["status"] == "completed"
    assert streamed.status_code == 200 and restreamed.status_code == 200
    assert restreamed.content == streamed.content  # the same events, rendered again from RUN_EVENTS
    assert clash.status_code == 422 and clash.json()["error"]["param"] == "Idempotency-Key"
    assert len(stack.fakes.run_requests) == 2  # one run per key


async def test_responses_refused_request_stores_nothing(stack: Stack) -> None:
    stack.fakes.agent(AGENT, Paced())
    async with stack.http() as http:
        resp = await http.post("/v1/responses", json=RESPONSE_BODY, headers=headers("resp-broke", api_key=BROKE_KEY))
    assert resp.status_code == 402
    kv = await stack.nc.jetstream().key_value(bucket_name(stack.subjects.namespace))
    with pytest.raises(NotFoundError):
        await kv.get(entry_key("u_carol", "resp-broke"))


async def test_retry_past_the_run_events_window_is_answered_from_the_archive(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        first = await http.post("/v1/chat/completions", json=BODY, headers=headers("archived-1"))
        whole = dict(BODY, stream=False)
        first_json = await http.post("/v1/chat/completions", json=whole, headers=headers("archived-2"))
    assert first.status_code == 200 and first_json.status_code == 200
    js = stack.nc.jetstream()
    archive = await js.object_store(results_bucket_name(stack.subjects.namespace))
    for key in ("archived-1", "archived-2"):
        async with asyncio.timeout(5):  # archived in the background as the run ended
            while True:
                try:
                    await archive.get(entry_key("u_alice", key))
                    break
                except NotFoundError:
                    await asyncio.sleep(0.05)
    # RUN_EVENTS no longer holds the runs' events (as after its window).
    for request in stack.fakes.run_requests:
        await js.purge_stream(stack.subjects.run_events_stream, subject=stack.subjects.run_events(request.run_id))
    async with stack.http() as http:
        again = await http.post("/v1/chat/completions", json=BODY, headers=headers("archived-1"))
        again_json = await http.post("/v1/chat/completions", json=whole, headers=headers("archived-2"))
        resumed = await http.post("/v1/chat/completions", json=BODY, headers=headers("archived-1", 1))
    assert again.content == first.content
    assert again_json.json() == first_json.json()
    assert first.content.endswith(resumed.content) and frame_ids(resumed.content)[0] == 2
    assert len(stack.fakes.run_requests) == 2


async def test_a_retry_whose_events_are_gone_everywhere_is_a_clear_409(stack: Stack) -> None:
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    whole = dict(BODY, stream=False)
    async with stack.http() as http:
        assert (await http.post("/v1/chat/completions", json=whole, headers=headers("lost-1"))).status_code == 200
    js = stack.nc.jetstream()
    (request,) = stack.fakes.run_requests
    archive = await js.object_store(results_bucket_name(stack.subjects.namespace))
    async with asyncio.timeout(5):
        while True:
            try:
                await archive.delete(entry_key("u_alice", "lost-1"))
                break
            except NotFoundError:
                await asyncio.sleep(0.05)
    await js.purge_stream(stack.subjects.run_events_stream, subject=stack.subjects.run_events(request.run_id))
    async with stack.http() as http:
        resp = await http.post("/v1/chat/completions", json=whole, headers=headers("lost-1"))
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "idempotency_result_expired"
    assert len(stack.fakes.run_requests) == 1


class TestTheWindowFollowsTheNewestStream:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        # Long enough for the reattach to land within it on a loaded machine.
        return {"idle_timeout_s": 10.0, "resume_window_s": 1.5}

    async def test_a_reattached_run_outlives_the_first_window_and_ends_with_the_second(
        self, stack: Stack, second: str
    ) -> None:
        """The first gateway's window passes while the client is attached on the second one: no cancel.
        When that client leaves too, the second gateway's window cancels the run."""
        paced = Paced()  # never released
        stack.fakes.agent(AGENT, paced)
        loop = asyncio.get_running_loop()
        await read_frames(stack.url, "follow-1", 2)
        async with (
            httpx.AsyncClient(base_url=second, timeout=10) as http,
            http.stream("POST", "/v1/chat/completions", json=BODY, headers=headers("follow-1", 1)) as resp,
        ):
            assert resp.status_code == 200
            reading = asyncio.ensure_future(resp.aread())
            # Well past the first gateway's window, the run is still going.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3.0):
                    await stack.fakes.cancelled.wait()
            assert not reading.done()
            reading.cancel()
            left = loop.time()
        async with asyncio.timeout(8):
            await stack.fakes.cancelled.wait()
        assert loop.time() - left >= 1.2  # the second gateway's own window, then the cancel
        (cancel,) = stack.fakes.cancels
        assert cancel.run_id == stack.fakes.run_requests[0].run_id


async def test_responses_retry_of_a_failed_run_says_it_failed_and_runs_nothing(stack: Stack) -> None:
    stack.fakes.agent(AGENT, fail_midway)
    async with stack.http() as http:
        first = await http.post("/v1/responses", json=RESPONSE_BODY, headers=headers("resp-failed"))
        again = await http.post("/v1/responses", json=RESPONSE_BODY, headers=headers("resp-failed"))
    assert first.status_code >= 500, first.text
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "idempotency_key_failed"
    assert len(stack.fakes.run_requests) == 1


async def test_a_last_event_id_with_a_new_key_gets_the_whole_stream(stack: Stack) -> None:
    """A Last-Event-ID can't be about a key's first run: the client is sent all of the run it pays for."""
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        fresh = await http.post("/v1/chat/completions", json=BODY, headers=headers("never-seen", 99))
    assert fresh.status_code == 200
    assert frame_ids(fresh.content)[0] == 0
    assert b"one " in fresh.content and b"three" in fresh.content
    assert fresh.content.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("past", [0, 1, 99_999], ids=["at-the-end", "one-past", "far-past"])
async def test_a_resume_at_or_past_the_end_of_a_finished_stream_gets_its_end(stack: Stack, past: int) -> None:
    """Nothing is left to send, but the answer still ends as a stream ends (an empty 200 could not be
    told from a cut connection, and an SSE client would reconnect again)."""
    paced = Paced()
    paced.gate.set()
    stack.fakes.agent(AGENT, paced)
    async with stack.http() as http:
        whole = await http.post("/v1/chat/completions", json=BODY, headers=headers(f"ended-{past}"))
        last = frame_ids(whole.content)[-1]
        again = await http.post(
            "/v1/chat/completions", json=BODY, headers=headers(f"ended-{past}", last_event_id=last + past)
        )
    assert again.status_code == 200
    assert again.content == b"id: %d\ndata: [DONE]\n\n" % last
    assert len(stack.fakes.run_requests) == 1
