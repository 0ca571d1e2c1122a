"""Health, readiness, metrics, rate limits and trace propagation of a running gateway."""

from __future__ import annotations

from typing import Any

import nats
import pytest

from contracts import Subjects
from devstack.procs import free_port
from tests.support.openapi_schema import validate

from .conftest import KEY, Stack
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_readyz_checks_nats_in_the_body_every_service_answers(stack: Stack, nats_url: str) -> None:
    async with stack.http() as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready" and body["checks"] == {"nats": True} and body["phase"] == "serving"
        assert body["optional"] in ({}, {"redis": True})  # Redis only when the environment names one
        # The catalog is not a check: its outage leaves the gateway in service, answering 503s itself.
        stack.app.state.ctx.subjects = Subjects(f"{stack.subjects.namespace}_nobody")
        assert (await http.get("/readyz")).status_code == 200
        # NATS is: a connection that no longer answers makes the gateway not ready.
        gone = await nats.connect(nats_url)
        await gone.close()
        stack.app.state.ctx.nc, live = gone, stack.app.state.ctx.nc
        try:
            not_ready = await http.get("/readyz")
        finally:
            stack.app.state.ctx.nc = live
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "not ready" and not_ready.json()["checks"] == {"nats": False}


@pytest.mark.parametrize("settings_overrides", [{"redis_url": f"redis://127.0.0.1:{free_port()}/0"}])
async def test_redis_down_is_degraded_never_not_ready(stack: Stack) -> None:
    async with stack.http() as http:
        ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "degraded",
        "checks": {"nats": True},
        "optional": {"redis": False},
        "phase": "serving",
    }


async def test_metrics_count_requests_tokens_and_first_tokens(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    body: dict[str, Any] = {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with stack.http() as http:
        assert (await http.post("/v1/chat/completions", json=body, headers=AUTH)).status_code == 200
        assert (await http.get("/v1/models")).status_code == 401
        text = (await http.get("/metrics")).text
    assert 'gateway_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'gateway_http_requests_total{method="GET",route="/v1/models",status="401"} 1.0' in text
    assert "gateway_time_to_first_token_seconds_count 1.0" in text
    assert 'gateway_tokens_total{kind="completion"} 7.0' in text
    assert "gateway_open_streams 0.0" in text


async def test_run_request_carries_trace_context_and_msg_id(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    headers = {**AUTH, "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    body = {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}]}
    async with stack.http() as http:
        assert (await http.post("/v1/chat/completions", json=body, headers=headers)).status_code == 200
    sent = stack.fakes.run_headers[0]
    assert sent["Nats-Msg-Id"] == stack.fakes.run_requests[0].run_id
    # The runner continues the caller's trace, under the gateway's server span.
    _, got_trace, parent, _ = sent["traceparent"].split("-")
    assert got_trace == trace_id and parent != "b7ad6b7169203331"


@pytest.mark.parametrize("settings_overrides", [{"default_rate_limit_per_minute": 2}])
async def test_rate_limit_is_429_with_retry_after(stack: Stack) -> None:
    async with stack.http() as http:
        answers = [await http.get("/v1/models", headers=AUTH) for _ in range(4)]
    limited = [r for r in answers if r.status_code == 429]
    assert answers[0].status_code == 200 and limited
    validate("ErrorResponse", limited[0].json())
    assert limited[0].json()["error"]["code"] == "rate_limit_exceeded"
    assert int(limited[0].headers["retry-after"]) >= 1


@pytest.mark.parametrize("settings_overrides", [{"default_rate_limit_per_minute": 1}])
async def test_a_spent_rate_limit_stops_chat_before_billing_and_wins_over_a_bad_body(stack: Stack) -> None:
    stack.fakes.agent("agent_hello", say_hello)
    good = {"model": "agent_hello", "messages": [{"role": "user", "content": "hi"}]}
    async with stack.http() as http:
        first = await http.post("/v1/chat/completions", headers=AUTH, json=good)
        again = await http.post("/v1/chat/completions", headers=AUTH, json=good)
        bad = await http.post("/v1/chat/completions", headers=AUTH, json={"model": "agent_hello"})
    assert first.status_code == 200
    assert again.status_code == bad.status_code == 429
    assert again.json()["error"]["code"] == "rate_limit_exceeded" and int(again.headers["retry-after"]) >= 1
    assert len(stack.fakes.admit_requests) == len(stack.fakes.run_requests) == 1
