"""A failed run is logged once at the gateway — request id, run id, user, agent, provider and the cause —
whether the runner was lost or a timeout ended it (a failure the runner reports: test_request_id.py;
a ``failed`` event seen twice: tests/unit/gateway/test_run_failure_log.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from contracts import RUNNER_ID_HEADER, RunStarted, TextDelta

from .conftest import KEY, RunContext, Stack

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]


def failure_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "gateway.runs" and " failed: " in r.getMessage()]


async def post(stack: Stack, agent: str, request_id: str, *, stream: bool = True) -> Any:
    body = {"model": agent, "messages": HI, "stream": stream}
    headers = {"Authorization": f"Bearer {KEY}", "X-Request-ID": request_id}
    async with stack.http() as http:
        return await http.post("/v1/chat/completions", json=body, headers=headers)


def assert_logged_once(
    caplog: pytest.LogCaptureFixture, stack: Stack, agent: str, request_id: str, *parts: str
) -> None:
    records = failure_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    [record] = records
    assert getattr(record, "request_id", None) == request_id
    text = record.getMessage()
    [request] = [r for r in stack.fakes.run_requests if r.agent.id == agent]
    for part in (request.run_id, "user=u_alice", f"agent={agent}", "provider=openai", *parts):
        assert part in text, (part, text)


@pytest.mark.parametrize("settings_overrides", [{"runner_lost_s": 0.6, "idle_timeout_s": 30}])
async def test_a_run_whose_runner_is_lost_is_logged_with_the_cause(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    async def dies(run: RunContext) -> None:
        await run.nc.publish(stack.subjects.runner_heartbeat, b"{}", headers={RUNNER_ID_HEADER: "runner-doomed"})
        await run.emit(RunStarted, runner_id="runner-doomed")
        await run.emit(TextDelta, delta="Hel")  # and then nothing: no heartbeat, no event

    stack.fakes.agent("agent_lost", dies)
    caplog.set_level(logging.INFO)
    resp = await post(stack, "agent_lost", "req-lost")
    assert b'"runner_lost"' in resp.content
    assert_logged_once(
        caplog, stack, "agent_lost", "req-lost", "runner=runner-doomed", "code=runner_lost", "runner lost"
    )


async def test_an_idle_run_is_logged_with_the_idle_timeout(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    async def goes_quiet(run: RunContext) -> None:
        await run.start()
        await run.emit(TextDelta, delta="and then")
        await asyncio.Event().wait()

    stack.fakes.agent("agent_idle", goes_quiet)
    caplog.set_level(logging.INFO)
    resp = await post(stack, "agent_idle", "req-idle")
    assert b'"run_timeout"' in resp.content
    assert_logged_once(caplog, stack, "agent_idle", "req-idle", "runner=fake", "code=run_timeout", "idle timeout")


async def test_no_runner_in_time_is_logged_with_the_queue_timeout(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    async def never_starts(run: RunContext) -> None:
        await asyncio.Event().wait()

    stack.fakes.agent("agent_nobody", never_starts)
    caplog.set_level(logging.INFO)
    resp = await post(stack, "agent_nobody", "req-nobody", stream=False)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "no_capacity"
    assert resp.headers["x-request-id"] == "req-nobody"
    assert_logged_once(caplog, stack, "agent_nobody", "req-nobody", "status=503", "code=no_capacity", "queue timeout")
