"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, OpenRouter, the fake LLM), streamed."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, cast

import httpx2
import openai

from ..connections import Connection
from ..errors import ProviderError, StreamBroken
from ..usage import from_openai
from .base import CallSpec, Chunk, FinishChunk, ReasoningChunk, TextChunk, ToolCallChunk, UsageChunk
from .common import provider_message, redact

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
    """Reasoning text of a delta: servers name the field ``reasoning_content`` or ``reasoning``, and the
    SDK keeps such unknown fields in ``model_extra``."""
    extra = getattr(delta, "model_extra", None) or {}
    for name in ("reasoning_content", "reasoning"):
        value = getattr(delta, name, None) or extra.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def chunks_of(chunk: Any) -> list[Chunk]:
    """The neutral chunks one ``ChatCompletionChunk`` carries."""
    out: list[Chunk] = []
    for choice in chunk.choices or ():
        delta = choice.delta
        if delta is not None:
            reasoning = reasoning_of(delta)
            if reasoning:
                out.append(ReasoningChunk(reasoning))
            if delta.content:
                out.append(TextChunk(delta.content))
            for tc in delta.tool_calls or ():
                fn = tc.function
                out.append(
                    ToolCallChunk(
                        index=tc.index,
                        arguments=(fn.arguments if fn is not None else None) or "",
                        id=tc.id,
                        name=fn.name if fn is not None else None,
                    )
                )
        if choice.finish_reason:
            out.append(FinishChunk(choice.finish_reason))
    if getattr(chunk, "usage", None) is not None:
        out.append(UsageChunk(from_openai(chunk.usage)))
    return out


class OpenAIProvider:
    kind = "openai"

    def __init__(self, conn: Connection, timeout_s: float) -> None:
        self._conn = conn
        # max_retries=0: a retry would double the spend and the latency; the run reports the error.
        self._client = openai.AsyncOpenAI(
            api_key=conn.api_key,
            base_url=conn.base_url,
            max_retries=0,
            timeout=httpx2.Timeout(timeout_s, connect=10.0),
        )

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, call: CallSpec) -> AsyncGenerator[Chunk, None]:
        try:
            stream = await self._client.chat.completions.create(
                model=call.model,
                messages=cast(Any, to_openai_messages(call)),
                stream=True,
                stream_options={"include_usage": True},
                # Agent parameters pass through as they are (any server-specific ones too).
                extra_body=call.params or None,
                tools=cast(Any, to_openai_tools(call)) if call.tools else openai.omit,
            )
        except openai.APIError as exc:
            raise ProviderError(provider_message(exc, self._conn.api_key), getattr(exc, "status_code", None)) from None
        finished = False
        try:
            async for raw in stream:
                for c in chunks_of(raw):
                    if isinstance(c, FinishChunk):
                        finished = True
                    yield c
        except (openai.APIError, httpx2.HTTPError) as exc:
            raise StreamBroken(redact(str(exc) or type(exc).__name__, self._conn.api_key)) from None
        finally:
            # Closing the response closes the HTTP request at once (cancel, or the consumer stopped).
            await stream.close()
        if not finished:
            raise StreamBroken("the stream ended before the model finished")
