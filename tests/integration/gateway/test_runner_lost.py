"""A runner that falls silent: its clients hear within seconds (not after the idle timeout), and a
request made while no runner is alive is a 503 at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from contracts import RUNNER_ID_HEADER, RunnerHeartbeat, RunStarted, TextDelta

from .conftest import KEY, RunContext, Stack

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]
LOST_AFTER_S = 0.6


async def beat(stack: Stack, runner: str) -> None:
    msg = RunnerHeartbeat(runner_id=runner, interval_s=0.1)
    await stack.nc.publish(
        stack.subjects.runner_heartbeat, msg.model_dump_json().encode(), headers={RUNNER_ID_HEADER: runner}
    )


async def heartbeats(stack: Stack, runner: str, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await beat(stack, runner)
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("settings_overrides", [{"runner_lost_s": LOST_AFTER_S, "idle_timeout_s": 30}])
async def test_a_silent_runners_stream_ends_within_seconds(stack: Stack) -> None:
    dead = asyncio.Event()

    async def dies_mid_stream(run: RunContext) -> None:
        await run.nc.publish(  # the first heartbeat lands before the run starts
            stack.subjects.runner_heartbeat, b"{}", headers={RUNNER_ID_HEADER: "runner-doomed"}
        )
        await run.emit(RunStarted, runner_id="runner-doomed")
        await run.emit(TextDelta, delta="Hel")
        dead.set()  # and then nothing, ever: no heartbeat, no event

    stack.fakes.agent("agent_doomed", dies_mid_stream)
    beating = asyncio.create_task(heartbeats(stack, "runner-doomed", dead))
    started = time.monotonic()
    body: dict[str, Any] = {"model": "agent_doomed", "messages": HI, "stream": True}
    async with stack.http() as http:
        resp = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
    await beating
    took = time.monotonic() - started
    assert resp.status_code == 200
    # The error ends the stream, without [DONE] (openai-wire.md §3.2).
    assert resp.text.rstrip().split("\n")[-1].replace(" ", "").startswith('data:{"error":{')
    assert '"code":"runner_lost"' in resp.text.replace(" ", "") and "[DONE]" not in resp.text
    assert took < 5, f"the client waited {took:.1f} s (idle timeout 30 s)"


@pytest.mark.parametrize("settings_overrides", [{"runner_lost_s": LOST_AFTER_S}])
async def test_no_runner_alive_is_a_503_at_once(stack: Stack) -> None:
    async def never(run: RunContext) -> None:
        raise AssertionError("no run may be queued")

    stack.fakes.agent("agent_x", never)
    await beat(stack, "runner-gone")
    await asyncio.sleep(LOST_AFTER_S * 2)  # time passes with no heartbeat: the runner is gone
    started = time.monotonic()
    async with stack.http() as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={"model": "agent_x", "messages": HI},
            headers={"Authorization": f"Bearer {KEY}"},
        )
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_capacity"
    assert resp.headers["retry-after"] == "2"
    assert time.monotonic() - started < 1
    assert stack.fakes.admit_requests == []  # nothing held


@pytest.mark.parametrize("settings_overrides", [{"runner_lost_s": LOST_AFTER_S, "idle_timeout_s": 30}])
@pytest.mark.parametrize("stream", [True, False])
async def test_a_retry_of_a_keyed_run_whose_runner_was_lost_gets_the_same_failure_at_once(
    stack: Stack, stream: bool
) -> None:
    """The runner cannot end the run any more, so the gateway that saw it go stores the failure as the
    run's last event: a retry of the key replays it at once (not the idle timeout's run_timeout)."""
    dead = asyncio.Event()

    async def dies_mid_stream(run: RunContext) -> None:
        await beat(stack, "runner-gone-too")
        await run.emit(RunStarted, runner_id="runner-gone-too")
        await run.emit(TextDelta, delta="Hel")
        dead.set()

    stack.fakes.agent("agent_gone", dies_mid_stream)
    beating = asyncio.create_task(heartbeats(stack, "runner-gone-too", dead))
    key = f"lost-{stream}"
    body: dict[str, Any] = {"model": "agent_gone", "messages": HI, "stream": stream}
    auth = {"Authorization": f"Bearer {KEY}", "Idempotency-Key": key}
    async with stack.http() as http:
        first = await http.post("/v1/chat/completions", json=body, headers=auth)
        await beating
        retries = []
        for extra in ({}, {"Last-Event-ID": "0"}) if stream else ({},):
            started = time.monotonic()
            retries.append((await http.post("/v1/chat/completions", json=body, headers=auth | extra), started))
    if stream:
        assert first.status_code == 200 and '"code":"runner_lost"' in first.text.replace(" ", "")
        whole = first.text
        for (retry, started), cut in zip(retries, (0, 1), strict=True):
            took = time.monotonic() - started
            assert took < 3, f"the retry waited {took:.1f} s (idle timeout 30 s)"
            assert retry.status_code == 200 and '"code":"runner_lost"' in retry.text.replace(" ", "")
            assert "[DONE]" not in retry.text
            # the same frames as the first answer's (after the id the client had, when it sent one)
            frames = whole.split("\n\n")
            assert retry.text.split("\n\n") == (
                frames if cut == 0 else [f for f in frames if not f.startswith("id: 0\n")]
            )
    else:
        assert first.status_code == 502 and first.json()["error"]["code"] == "runner_lost"
        (retry, started) = retries[0]
        assert time.monotonic() - started < 3
        assert retry.status_code == 502 and retry.json() == first.json()
