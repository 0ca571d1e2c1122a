"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, OpenRouter, the fake LLM), streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import openai
import orjson

from ..connections import Connection
from ..errors import ProviderError, StreamBroken
from ..usage import from_openai
from .base import CallSpec, Chunk, FinishChunk, ReasoningChunk, TextChunk, ToolCallChunk, UsageChunk
from .common import client_options, connection_failed, redact, status_message

#: Responses-API text parts, which chat completions knows as plain ``text`` parts.
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
    return [
        {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
        for t in call.tools
    ]


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
                out.append(
                    ToolCallChunk(
                        index=tc.get("index", 0),
                        arguments=fn.get("arguments") or "",
                        id=tc.get("id"),
                        name=fn.get("name"),
                    )
                )
        if choice.get("finish_reason"):
            out.append(FinishChunk(choice["finish_reason"]))
    if chunk.get("usage"):
        out.append(UsageChunk(from_openai(chunk["usage"])))
    return out


class OpenAIProvider:
    """Streams chat completions from an OpenAI-compatible server.

    The official SDK client holds the connection's configuration (base URL, key, default headers,
    timeout, the pooled HTTP client); the streamed call itself is one POST on that client, sent and
    decoded here. Going through the SDK's request machinery cost about 0.7 ms and most of the
    runner's CPU per call (its per-request transforms, then a model per chunk), on every request's
    path to its first token.
    """

    kind = "openai"

    def __init__(self, conn: Connection, timeout_s: float) -> None:
        self._conn = conn
        options = client_options(conn, timeout_s)
        self._http = httpx2.AsyncClient(
            timeout=options["timeout"], limits=httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
        )
        self._client = openai.AsyncOpenAI(**options, http_client=self._http)
        self._url = str(self._client.base_url.join("chat/completions"))
        self._headers = {
            k: v
            for k, v in {**self._client.default_headers, "Accept": "text/event-stream"}.items()
            if isinstance(v, str)
        }

    async def close(self) -> None:
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
        if call.params:
            body.update(call.params)
        return body

    async def stream(self, call: CallSpec) -> AsyncGenerator[Chunk, None]:
        secret = self._conn.api_key
        request = self._http.build_request(
            "POST", self._url, content=orjson.dumps(self.request_body(call)), headers=self._headers
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx2.HTTPError as exc:
            raise ProviderError(connection_failed(exc, secret)) from None
        # A stream cut short (the connection closed cleanly) has neither a finish reason nor [DONE];
        # it must not pass for a complete answer.
        finished = done = False
        try:
            if response.status_code >= 400:
                raise ProviderError(
                    status_message(response.status_code, await response.aread(), secret), response.status_code
                )
            async for line in response.aiter_lines():
                if done or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    # Read on to the end of the body rather than stopping here: a response closed
                    # before its end costs the pooled connection, and the next call a new one.
                    finished = done = True
                    continue
                chunk = orjson.loads(data)
                if not isinstance(chunk, dict):
                    raise StreamBroken("the provider sent an event that is not a JSON object")
                if chunk.get("error"):
                    raise StreamBroken(redact(_error_text(chunk["error"]), secret))
                for c in chunks_of(chunk):
                    if isinstance(c, FinishChunk):
                        finished = True
                    yield c
        except (httpx2.HTTPError, orjson.JSONDecodeError) as exc:
            raise StreamBroken(redact(str(exc) or type(exc).__name__, secret)) from None
        finally:
            # Closing the response closes the HTTP request at once (cancel, or the consumer stopped).
            await response.aclose()
        if not finished:
            raise StreamBroken("the stream ended before the model finished")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error)
