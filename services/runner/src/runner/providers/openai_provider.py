"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, OpenRouter, the fake LLM), streamed."""

from __future__ import annotations

import asyncio
import logging
import random
import urllib.request
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import openai
import orjson

from ..connections import Connection
from ..errors import ProviderError, StreamBroken
from ..usage import from_openai
from .base import (
    PAUSE,
    CallSpec,
    Chunk,
    FinishChunk,
    ForcedTool,
    ReasoningChunk,
    ResponseInfo,
    TextChunk,
    ToolCallChunk,
    ToolChoice,
    UsageChunk,
)
from .common import client_options, connection_failed, http_refusal, redact

#: Responses-API text parts, which chat completions knows as plain ``text`` parts.
log = logging.getLogger(__name__)

#: Attempts at a provider call whose connection fails before any answer (the SDK's own retries are off:
#: a call the provider answered, even with an error, is never sent twice).
CONNECTION_ATTEMPTS = 2
#: About how long before the second attempt (jittered ±50 %).
CONNECTION_RETRY_PAUSE_S = 0.1

_TEXT_PARTS = frozenset({"input_text", "output_text"})


def _content(content: Any) -> Any:
    if not isinstance(content, list):
        return content
    return [{"type": "text", "text": str(p.get("text", ""))} if p.get("type") in _TEXT_PARTS else p for p in content]


def to_openai_messages(call: CallSpec) -> list[dict[str, Any]]:
    """The conversation as chat-completions messages (it is already nearly in that shape).

    ``developer`` becomes ``system``: OpenAI treats them alike, and many compatible servers (vLLM,
    Ollama …) know only ``system``. Responses-style text parts become chat ``text`` parts.
    """
    out: list[dict[str, Any]] = []
    for m in call.messages:
        msg = m.model_dump(exclude_none=True)
        if msg["role"] == "developer":
            msg["role"] = "system"
        if "content" in msg:
            msg["content"] = _content(msg["content"])
        out.append(msg)
    return out


def to_openai_tools(call: CallSpec) -> list[dict[str, Any]]:
    """Every tool as an OpenAI function; an empty description and an unsaid ``strict`` are left out."""
    out = []
    for t in call.tools:
        function: dict[str, Any] = {"name": t.name}
        if t.description:
            function["description"] = t.description
        function["parameters"] = t.parameters
        if t.strict is not None:
            function["strict"] = t.strict
        out.append({"type": "function", "function": function})
    return out


def to_openai_tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if isinstance(choice, ForcedTool):
        return {"type": "function", "function": {"name": choice.name}}
    return choice


def reasoning_of(delta: Any) -> str | None:
    """Reasoning text of a delta (a JSON object or an SDK model): servers name the field
    ``reasoning_content`` or ``reasoning``; the SDK keeps such unknown fields in ``model_extra``."""
    extra = delta if isinstance(delta, dict) else getattr(delta, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = extra.get(name) or (None if isinstance(delta, dict) else getattr(delta, name, None))
        if isinstance(value, str) and value:
            return value
    return None


def chunks_of(chunk: dict[str, Any]) -> list[Chunk]:
    """The neutral chunks one ``chat.completion.chunk`` (decoded JSON) carries."""
    out: list[Chunk] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta")
        if delta:
            reasoning = reasoning_of(delta)
            if reasoning:
                out.append(ReasoningChunk(reasoning))
            if delta.get("content"):
                out.append(TextChunk(delta["content"]))
            for tc in delta.get("tool_calls") or ():
                fn = tc.get("function") or {}
                index, arguments, extra = tc.get("index"), fn.get("arguments") or "", tc.get("extra_content")
                out.append(
                    ToolCallChunk(
                        index=index if type(index) is int and index >= 0 else None,
                        # A server that sends the arguments as an object rather than its JSON text.
                        arguments=arguments if isinstance(arguments, str) else orjson.dumps(arguments).decode(),
                        id=tc.get("id") or None,
                        name=fn.get("name") or None,
                        extra_content=extra if isinstance(extra, dict) and extra else None,
                    )
                )
        if choice.get("finish_reason"):
            out.append(FinishChunk(choice["finish_reason"]))
    if chunk.get("usage"):
        out.append(UsageChunk(from_openai(chunk["usage"])))
    return out


def whole_chunks(body: Any, secret: str = "") -> list[Chunk]:
    """The chunks of a whole ``chat.completion`` (decoded JSON), as if it had been streamed in one
    chunk: its message as the delta, each tool call numbered by its place."""
    if not isinstance(body, dict):
        raise StreamBroken("the provider answered with JSON that is not an object")
    if body.get("error"):
        raise StreamBroken(redact(_error_text(body["error"]), secret))
    choices = []
    for choice in body.get("choices") or ():
        message = dict(choice.get("message") or {}) if isinstance(choice, dict) else {}
        calls = message.get("tool_calls")
        if isinstance(calls, list):
            message["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(calls) if isinstance(tc, dict)]
        choices.append({"delta": message, "finish_reason": choice.get("finish_reason")})
    return [response_info(body), *chunks_of({"choices": choices, "usage": body.get("usage")})]


def response_info(chunk: dict[str, Any]) -> ResponseInfo:
    """The response's id and model as a chunk names them (``None`` for what a server leaves out)."""
    rid, model = chunk.get("id"), chunk.get("model")
    return ResponseInfo(
        id=rid if isinstance(rid, str) and rid else None, model=model if isinstance(model, str) and model else None
    )


class OpenAIProvider:
    """Streams chat completions from an OpenAI-compatible server.

    The official SDK client holds the connection's configuration (base URL, key, default headers);
    the streamed call itself is one POST sent with aiohttp and decoded here with orjson. The SDK's
    request path cost about 0.7 ms before the first token, and httpx's per-chunk work about four
    times aiohttp's: together most of the runner's CPU per streamed token.

    Each read from the network ends with :data:`~runner.providers.base.PAUSE` (``marks_pauses``): the
    chunks one read brought arrived together.
    """

    kind = "openai"
    marks_pauses = True

    def __init__(self, conn: Connection, timeout_s: float) -> None:
        self._conn = conn
        self._timeout_s = timeout_s
        self._client = openai.AsyncOpenAI(**client_options(conn, timeout_s))
        self._url = str(self._client.base_url.join("chat/completions"))
        self._headers = {
            k: v
            for k, v in {**self._client.default_headers, "Accept": "text/event-stream"}.items()
            if isinstance(v, str)
        }
        # HTTP(S)_PROXY / NO_PROXY as the SDKs honour them, looked up once: aiohttp's own trust_env
        # looks them (and ~/.netrc) up again on every request, about 1 ms each.
        self._proxy = proxy_for(self._url)
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running event loop; its connections are kept alive across calls.
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=self._timeout_s),
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self._client.close()

    def request_body(self, call: CallSpec) -> dict[str, Any]:
        """The chat completions request of one call. Agent parameters pass through as they are
        (server-specific ones too) and win over ours, as the SDK's ``extra_body`` would."""
        body: dict[str, Any] = {
            "model": call.model,
            "messages": to_openai_messages(call),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if call.tools:
            body["tools"] = to_openai_tools(call)
            # OpenAI refuses both without tools.
            if call.tool_choice is not None:
                body["tool_choice"] = to_openai_tool_choice(call.tool_choice)
            if call.parallel_tool_calls is not None:
                body["parallel_tool_calls"] = call.parallel_tool_calls
        if call.response_format is not None:
            body["response_format"] = call.response_format
        if call.params:
            body.update(call.params)
        return body

    async def stream(self, call: CallSpec) -> AsyncGenerator[Chunk, None]:
        secret = self._conn.api_key
        data = orjson.dumps(self.request_body(call))
        for attempt in range(CONNECTION_ATTEMPTS):
            try:
                response = await self._session().post(self._url, data=data, headers=self._headers, proxy=self._proxy)
                break
            except TimeoutError as exc:  # no answer in time: the provider may be working on it, so no retry
                raise ProviderError(connection_failed(exc, secret)) from None
            except aiohttp.ClientConnectionError as exc:
                # The connection failed before any answer (refused, reset, closed while the request was
                # written: a kept-alive connection the server had just dropped, or a server shedding
                # connections). Tried again on a new connection, once, after a short pause.
                if attempt + 1 == CONNECTION_ATTEMPTS:
                    raise ProviderError(connection_failed(exc, secret)) from None
                log.info("provider connection failed (%s); trying again", type(exc).__name__)
                await asyncio.sleep(CONNECTION_RETRY_PAUSE_S * (0.5 + random.random()))
            except aiohttp.ClientError as exc:
                raise ProviderError(connection_failed(exc, secret)) from None
        # A stream cut short (the connection closed cleanly) has neither a finish reason nor [DONE];
        # it must not pass for a complete answer.
        finished = done = identified = False
        try:
            if response.status >= 400:
                raise http_refusal(response.status, await response.read(), response.headers, secret)
            if response.content_type == "application/json":
                # A server that does not stream answers with the whole completion (or an error) instead.
                whole = whole_chunks(orjson.loads(await response.read()), secret)
                done = True  # read to its end
                for c in whole:
                    yield c
                return
            async for lines in sse_reads(response.content):
                yielded = False
                for line in lines:
                    if done or not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        # Read on to the end of the body rather than stopping here: a response closed
                        # before its end costs the pooled connection, and the next call a new one.
                        finished = done = True
                        continue
                    chunk = orjson.loads(data)
                    if not isinstance(chunk, dict):
                        raise StreamBroken("the provider sent an event that is not a JSON object")
                    if chunk.get("error"):
                        raise StreamBroken(redact(_error_text(chunk["error"]), secret))
                    if not identified:
                        # Every chunk repeats the response's id and model: read them off the first only.
                        identified = True
                        yield response_info(chunk)
                    for c in chunks_of(chunk):
                        if isinstance(c, FinishChunk):
                            finished = True
                        yielded = True
                        yield c
                if yielded:
                    yield PAUSE  # what this read brought is handled: the next chunk waits for the network
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
            raise StreamBroken(redact(str(exc) or type(exc).__name__, secret)) from None
        finally:
            if done:
                response.release()  # read to its end: the connection goes back to the pool
            else:
                response.close()  # cancelled or broken: the provider sees the connection close at once
        if not finished:
            raise StreamBroken("the stream ended before the model finished")


def proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY``), if any."""
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme)


async def sse_reads(body: aiohttp.StreamReader) -> AsyncGenerator[list[bytes], None]:
    """The complete lines of an event stream, as each read from the network brings them (whatever
    their length: aiohttp's own line reader has a limit)."""
    rest = b""
    async for data in body.iter_any():
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        if lines:
            yield [line.rstrip(b"\r") for line in lines]
    if rest:
        yield [rest.rstrip(b"\r")]


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
