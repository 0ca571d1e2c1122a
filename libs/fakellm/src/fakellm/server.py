"""The fake LLM's HTTP server: a small ASGI app (no framework on the hot path) on uvicorn.

Routes: ``POST /v1/chat/completions`` (OpenAI), ``POST /v1/messages`` (Anthropic), ``GET /v1/models``,
``PUT /_fake/scripts/{model}``, ``DELETE /_fake/scripts``, ``GET /_fake/requests``, ``DELETE
/_fake/requests``, ``GET /_fake/wait``, ``GET /healthz``.

A model with a script (``PUT /_fake/scripts/{model}`` with ``{"turns": [...]}``) answers its turns in
order: the turn is the number of assistant messages after the last user message. A model without one
echoes the last user message (``You said: …``), except that a request offering a ``calculator`` tool
whose last user message holds an arithmetic expression (``What is 17*23?``) gets a ``calculator``
call, one offering ``current_time`` and asking for the time gets a ``current_time`` call, and the
request carrying those tools' results gets a text answer with them (``17*23 = 391.``): the agent loop,
deterministic, without a provider (:mod:`fakellm.autotools`).

Like a real model, the fake obeys ``tool_choice`` (OpenAI's and Anthropic's): ``none`` drops a turn's
tool calls, ``required``/``any`` makes one when the turn has none, a named function is the call
(:func:`fakellm.script.obey_tool_choice`). Each record keeps the request's other fields (``params``:
tools, tool_choice, response_format …) for tests to check what reached the provider.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import orjson
import uvicorn

from . import wire_anthropic, wire_openai
from .autotools import unscripted_turn
from .records import Records
from .script import Plan, last_user_index, obey_tool_choice, plan, select_turn

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _Abort(Exception):
    """Cut the connection on purpose (a script's ``fail_after``)."""


class FakeLLMApp:
    """The ASGI application. ``ttft_ms`` and ``tokens_per_s`` are defaults a script turn may override."""

    def __init__(self, ttft_ms: float = 0.0, tokens_per_s: float = 0.0) -> None:
        self.defaults = (ttft_ms, tokens_per_s)
        self.scripts: dict[str, list[dict[str, Any]]] = {}
        self.records = Records()
        self._ids = itertools.count(1)

    # --- plumbing ---------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in ("/v1/chat/completions", "/chat/completions"):
            await self._generate(scope, receive, send, "openai")
        elif method == "POST" and path in ("/v1/messages", "/messages"):
            await self._generate(scope, receive, send, "anthropic")
        elif method == "GET" and path in ("/v1/models", "/models"):
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fakellm"} for m in sorted(self.scripts)]
            await _json(send, 200, {"object": "list", "data": data})
        elif method == "PUT" and path.startswith("/_fake/scripts/"):
            body = orjson.loads(await _body(receive) or b"{}")
            turns = body.get("turns")
            if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
                await _json(send, 400, {"error": 'body must be {"turns": [ {...}, ... ]}'})
                return
            self.scripts[path.removeprefix("/_fake/scripts/")] = turns
            await _json(send, 200, {"model": path.removeprefix("/_fake/scripts/"), "turns": len(turns)})
        elif method == "DELETE" and path == "/_fake/scripts":
            self.scripts.clear()
            await _json(send, 200, {"cleared": True})
        elif method == "GET" and path == "/_fake/requests":
            q = _query(scope)
            await _json(send, 200, {"data": self.records.query(q.get("model"), q.get("status"))})
        elif method == "DELETE" and path == "/_fake/requests":
            self.records.clear()
            await _json(send, 200, {"cleared": True})
        elif method == "GET" and path == "/_fake/wait":
            q = _query(scope)
            hit = await self.records.wait(q.get("model"), q.get("status", "completed"), float(q.get("timeout", "5")))
            await _json(send, 200 if hit else 408, hit or {"error": "timeout"})
        elif method == "GET" and path == "/healthz":
            await _json(send, 200, {"status": "ok"})
        else:
            await _json(
                send,
                404,
                {
                    "error": {
                        "message": f"no route {method} {path}",
                        "type": "invalid_request_error",
                        "param": None,
                        "code": None,
                    }
                },
            )

    # --- generation --------------------------------------------------------------------------
    async def _generate(self, scope: Scope, receive: Receive, send: Send, api: str) -> None:
        try:
            body = orjson.loads(await _body(receive))
            model = str(body["model"])
            messages = body["messages"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            err = (wire_openai if api == "openai" else wire_anthropic).error_body(400, "invalid request body", None)
            await _json(send, 400, err)
            return
        turn_index, user_text = select_turn(messages, api)
        turns = self.scripts.get(model)
        if turns:
            turn = turns[min(turn_index, len(turns) - 1)]
        else:
            turn = unscripted_turn(body, api, last_user_index(messages, api), user_text)
        turn = obey_tool_choice(turn, body, api)
        p = plan(turn, body, api, self.defaults)
        # A script's ``whole``: one JSON body even to a streamed request, as servers without streaming answer.
        streaming = bool(body.get("stream")) and not turn.get("whole")
        params = {k: v for k, v in body.items() if k != "messages"}
        rec = self.records.new(api, model, streaming, turn_index, messages, params)
        rid = f"chatcmpl-fake{next(self._ids)}" if api == "openai" else f"msg_fake{next(self._ids)}"
        wire = wire_openai if api == "openai" else wire_anthropic
        if p.error:
            # A scripted refusal: {"status", "message", "type", "code" (OpenAI's wire only), "retry_after"}.
            status = int(p.error.get("status", 500))
            await self.records.finish(rec, "error")
            err = wire.error_body(status, str(p.error.get("message", "scripted error")), p.error.get("type"))
            if api == "openai" and p.error.get("code") is not None:
                err["error"]["code"] = p.error["code"]
            retry = p.error.get("retry_after")
            extra = [(b"retry-after", str(retry).encode())] if retry is not None else []
            await _json(send, status, err, extra)
            return
        if not streaming:
            await self._whole(send, rec, p, wire, model, rid, receive)
            return
        if api == "openai":
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            frames = wire_openai.stream(p, model, include_usage, rid)
        else:
            frames = wire_anthropic.stream(p, model, rid)
        await self._stream(send, receive, rec, p, frames)

    async def _whole(
        self, send: Send, rec: dict[str, Any], p: Plan, wire: Any, model: str, rid: str, receive: Receive
    ) -> None:
        n = len(p.reasoning) + len(p.text) + sum(len(c.chunks) for c in p.tool_calls)
        delay = p.ttft_ms / 1000 + (n / p.tokens_per_s if p.tokens_per_s > 0 else 0)
        if delay > 0 and await _disconnected_within(receive, delay):
            await self.records.finish(rec, "disconnected")
            return
        rec["tokens_sent"] = n
        await _json(send, 200, wire.whole(p, model, rid))
        await self.records.finish(rec, "completed")

    async def _stream(
        self, send: Send, receive: Receive, rec: dict[str, Any], p: Plan, frames: Iterator[tuple[bytes, bool]]
    ) -> None:
        gone = _Departure()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        status = "completed"
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
                }
            )
            interval = 1 / p.tokens_per_s if p.tokens_per_s > 0 else 0.0
            tokens = 0
            for data, is_token in frames:
                if is_token:
                    if p.fail_after is not None and tokens >= p.fail_after:
                        raise _Abort
                    wait = p.ttft_ms / 1000 if tokens == 0 else interval
                    if p.pause_after is not None and tokens == p.pause_after:
                        wait += p.pause_ms / 1000
                    if wait > 0:
                        await gone.sleep(wait)
                if gone.is_set():
                    status = "disconnected"
                    return
                if is_token:  # (a token whose pause the client's departure cut short is not counted)
                    tokens += 1
                    rec["tokens_sent"] = tokens
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except _Abort:
            status = "aborted"
            raise
        except OSError:
            status = "disconnected"
        except asyncio.CancelledError:
            status = "disconnected"
            raise
        finally:
            watcher.cancel()
            if gone.is_set() and status == "completed":
                status = "disconnected"
            await self.records.finish(rec, status)


class _Departure:
    """A streaming client's departure, and the pauses between tokens it cuts short. A pause is one
    future and one timer (what ``asyncio.sleep`` costs): ``wait_for`` on an event made a task per
    token, the fake LLM's largest cost when it paces thousands of streams."""

    __slots__ = ("_gone", "_waiter")

    def __init__(self) -> None:
        self._gone = False
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        self._gone = True
        _wake(self._waiter)

    def is_set(self) -> bool:
        return self._gone

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or until the client leaves."""
        if self._gone:
            return
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunks.append(msg.get("body", b""))
        if not msg.get("more_body"):
            break
    return b"".join(chunks)


async def _disconnected_within(receive: Receive, seconds: float) -> bool:
    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    try:
        await asyncio.wait_for(until_disconnect(), seconds)
        return True
    except TimeoutError:
        return False


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


def _query(scope: Scope) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}


class FakeLLM:
    """Run the fake LLM in this process: ``await FakeLLM(port=0).start()``, then ``.url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        ttft_ms: float = 0.0,
        tokens_per_s: float = 0.0,
        log_level: str = "warning",
    ) -> None:
        self.app = FakeLLMApp(ttft_ms, tokens_per_s)
        self.host = host
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=log_level,
            access_log=False,
            http="httptools",
            lifespan="on",
            timeout_graceful_shutdown=1,
            # Idle connections live longer here than in the SDKs' pools (5 s), as at real providers: with
            # both at 5 s, a request sent on a connection as the server closes it fails ("Server disconnected").
            timeout_keep_alive=75,
        )
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task:
            await self._task

    async def serve_forever(self) -> None:
        await self._server.serve(sockets=[self._sock])
