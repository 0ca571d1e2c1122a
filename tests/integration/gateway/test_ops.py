"""Health, readiness, metrics, rate limits and trace propagation of a running gateway."""

from __future__ import annotations

from typing import Any

import pytest

from contracts import Subjects
from tests.support.openapi_schema import validate

from .conftest import KEY, Stack
from .test_chat_stream import say_hello

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY}"}


async def test_readyz_checks_nats_and_the_catalog(stack: Stack) -> None:
    async with stack.http() as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"nats": "ok", "catalog": "ok"}
        # Point the gateway at a namespace nobody answers in: not ready, and the body is still the envelope.
        stack.app.state.ctx.subjects = Subjects(f"{stack.subjects.namespace}_nobody")
        not_ready = await http.get("/readyz")
    assert not_ready.status_code == 503
    validate("ErrorResponse", {"error": not_ready.json()["error"]})
    assert not_ready.json()["checks"]["catalog"] == "down"


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
