"""The request id: on every response (the client's when acceptable; a 500 from a bug too), on the run's
request, and on the gateway's log records about the request — uvicorn's access line included, a failed
run logged once with who, what and why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

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


@contextlib.asynccontextmanager
async def served_as_in_production(app: Any) -> AsyncIterator[str]:
    """The stack's (already started) app behind a second uvicorn configured as ``python -m gateway`` logs:
    no log_config of its own (servicekit's format), the access log on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=True, loop="none", ws="none")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_the_access_log_line_names_the_request(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    async with served_as_in_production(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        resp = await http.get("/healthz", headers={"X-Request-ID": "access-me-3"})
    assert resp.headers["x-request-id"] == "access-me-3"
    lines = [r for r in caplog.records if r.name == "uvicorn.access" and "/healthz" in r.getMessage()]
    assert len(lines) == 1 and getattr(lines[0], "request_id", None) == "access-me-3"


async def test_an_unhandled_error_is_a_500_envelope_with_the_request_id(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    async def boom() -> None:
        raise RuntimeError("a bug")

    stack.app.add_api_route("/test-boom", boom)
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.INFO, logger="uvicorn.access")  # the stack's own uvicorn set it to warning
    async with served_as_in_production(stack.app) as url, httpx.AsyncClient(base_url=url, timeout=10) as http:
        resp = await http.get("/test-boom", headers={"X-Request-ID": "boom-me-9"})
    assert resp.status_code == 500
    assert resp.headers["x-request-id"] == "boom-me-9"
    assert resp.json() == {
        "error": {
            "message": "The server had an error while processing your request.",
            "type": "server_error",
            "param": None,
            "code": "internal_error",
        }
    }
    # The traceback is logged once, under the request's id; so is the access line of the 500.
    errors = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(errors) == 1 and getattr(errors[0], "request_id", None) == "boom-me-9"
    [access] = [r for r in caplog.records if r.name == "uvicorn.access" and "/test-boom" in r.getMessage()]
    assert getattr(access, "request_id", None) == "boom-me-9" and " 500" in access.getMessage()
