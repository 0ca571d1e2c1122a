"""The request id: on every response (the client's when acceptable), on the run's request, and on the
gateway's log records about the request — a failed run logged once with who, what and why."""

from __future__ import annotations

import logging
import re

import pytest

from contracts import ErrorInfo, RunFailed, TextDelta

from .conftest import KEY, RunContext, Stack

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {KEY}"}


async def fail_with_cause(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="partial")
    err = ErrorInfo(status=502, type="server_error", message="The connection broke.", code="provider_error")
    await run.emit(RunFailed, error=err, detail="TransferEncodingError: 400, message='Not enough data'")


async def test_every_response_has_a_request_id(stack: Stack) -> None:
    async with stack.http() as http:
        ok = await http.get("/healthz")
        unknown = await http.get("/nope")
        refused = await http.post("/v1/chat/completions", json={})
    ids = [r.headers.get("x-request-id") for r in (ok, unknown, refused)]
    assert all(i and re.fullmatch(r"req_[0-9a-f]{24}", i) for i in ids), ids
    assert len(set(ids)) == 3


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("client-id-42", True), ("x" * 128, True), ("x" * 129, False), ("has space", False), ("tab\there", False)],
)
async def test_a_client_request_id_is_kept_when_bounded(stack: Stack, sent: str, kept: bool) -> None:
    async with stack.http() as http:
        resp = await http.get("/healthz", headers={"X-Request-ID": sent})
    got = resp.headers["x-request-id"]
    assert (got == sent) is kept
    if not kept:
        assert re.fullmatch(r"req_[0-9a-f]{24}", got)


async def test_a_failed_run_carries_and_logs_the_request_id(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    stack.fakes.agent("agent_cause", fail_with_cause)
    caplog.set_level(logging.INFO)
    body = {"model": "agent_cause", "messages": [{"role": "user", "content": "x"}], "stream": True}
    async with stack.http() as http:
        resp = await http.post("/v1/chat/completions", json=body, headers={**AUTH, "X-Request-ID": "trace-me-7"})
        assert resp.headers["x-request-id"] == "trace-me-7"
        assert b"The connection broke." in resp.content
        # The technical cause is for the logs, never the client.
        assert b"TransferEncodingError" not in resp.content
    [request] = [r for r in stack.fakes.run_requests if r.agent.id == "agent_cause"]
    assert request.request_id == "trace-me-7"
    failed = [r for r in caplog.records if r.name == "gateway.runs" and "failed" in r.getMessage()]
    assert len(failed) == 1
    [record] = failed
    assert getattr(record, "request_id", None) == "trace-me-7"
    text = record.getMessage()
    for part in (request.run_id, "u_alice", "agent_cause", "openai", "TransferEncodingError", "provider_error"):
        assert part in text, (part, text)
