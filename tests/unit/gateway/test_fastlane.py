"""The hot routes' short way in (:mod:`gateway.fastlane`): the endpoint runs past Starlette's routing
and FastAPI's outer layers, and everything those layers did for it is still done."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from gateway.app import create_app
from gateway.errors import GatewayError
from gateway.routes import chat, responses
from gateway.settings import GatewaySettings

#: The layers a hot request no longer passes: Starlette's and FastAPI's application, routing and
#: error middleware.
SKIPPED = (
    "starlette/applications.py",
    "fastapi/applications.py",
    "starlette/routing.py",
    "fastapi/routing.py",
    "starlette/middleware/errors.py",
    "starlette/middleware/exceptions.py",
    "starlette/_exception_handler.py",
    "fastapi/middleware/asyncexitstack.py",
    "fastapi/telemetry/_asgi.py",
)


def _callers() -> list[str]:
    frames, frame = [], sys._getframe(1)
    while frame is not None:
        frames.append(frame.f_code.co_filename.replace("\\", "/"))
        frame = frame.f_back
    return frames


@pytest.fixture
async def client(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    seen: dict[str, list[str]] = {}

    async def hot(request: Request) -> Response:
        seen[request.url.path] = _callers()
        kind = request.headers.get("x-test")
        if kind == "on-purpose":
            raise GatewayError.bad_request("Nope.", "model")
        if kind == "bug":
            raise ZeroDivisionError
        return JSONResponse({"ok": True})

    monkeypatch.setattr(chat, "endpoint", hot)
    monkeypatch.setattr(responses, "endpoint", hot)
    app = create_app(GatewaySettings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as c:
        c.seen = seen  # type: ignore[attr-defined]
        yield c


@pytest.mark.parametrize("path", [chat.PATH, responses.PATH])
async def test_a_hot_route_runs_its_endpoint_past_starlettes_routing_and_outer_layers(
    client: httpx.AsyncClient, path: str
) -> None:
    got = await client.post(path, json={}, headers={"x-request-id": "req-hot-1"})
    assert got.status_code == 200 and got.json() == {"ok": True}
    assert got.headers["x-request-id"] == "req-hot-1"  # the observability middleware still ran
    callers = client.seen[path]  # type: ignore[attr-defined]
    assert any(f.endswith("gateway/middleware.py") for f in callers)
    assert any(f.endswith("gateway/shedding.py") for f in callers)
    assert [f for f in callers if f.endswith(SKIPPED)] == []


async def test_an_error_raised_on_purpose_on_a_hot_route_is_its_envelope(client: httpx.AsyncClient) -> None:
    got = await client.post(chat.PATH, json={}, headers={"x-test": "on-purpose"})
    assert got.status_code == 400
    assert got.json()["error"] == {
        "message": "Nope.",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
    assert got.headers["x-request-id"]


async def test_a_bug_on_a_hot_route_is_a_500_envelope_with_the_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    got = await client.post(responses.PATH, json={}, headers={"x-test": "bug", "x-request-id": "req-bug-1"})
    assert got.status_code == 500
    assert got.json()["error"]["type"] == "server_error"
    assert got.headers["x-request-id"] == "req-bug-1"
    assert [r.exc_info[0] for r in caplog.records if r.exc_info] == [ZeroDivisionError]


async def test_another_method_on_a_hot_path_goes_the_usual_way(client: httpx.AsyncClient) -> None:
    got = await client.get(chat.PATH)
    assert got.status_code == 405
    assert got.json()["error"]["code"] == "method_not_allowed"
    assert got.headers["x-request-id"]
