"""Anthropic Messages, streamed as raw events: thinking → reasoning, tool_use → tool calls."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from typing import Any, cast

import anthropic
import httpx2

from contracts import ChatMessage

from ..connections import Connection
from ..errors import StreamBroken
from ..usage import from_anthropic_delta, from_anthropic_start
from .base import (
    CallSpec,
    Chunk,
    FinishChunk,
    ForcedTool,
    OpaqueBlock,
    ReasoningChunk,
    ResponseInfo,
    TextChunk,
    ToolCallChunk,
    ToolChoice,
    UsageChunk,
)
from .common import client_options, redact, sdk_refusal

#: Anthropic requires ``max_tokens``; this is the default when neither agent nor request sets it.
DEFAULT_MAX_TOKENS = 4096

#: Anthropic's stop reasons as OpenAI's finish reasons (``refusal``: its classifiers stopped the answer).
_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def _tool_input(arguments: str) -> Any:
    try:
        value = json.loads(arguments) if arguments else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _blocks(m: ChatMessage) -> list[dict[str, Any]]:
    if m.role == "tool":
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.text()}]
    blocks: list[dict[str, Any]] = []
    text = m.text()
    if text:
        blocks.append({"type": "text", "text": text})
    for call in m.tool_calls or ():
        blocks.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.function.name,
                "input": _tool_input(call.function.arguments),
            }
        )
    return blocks


def to_anthropic(
    messages: list[ChatMessage], extras: dict[int, list[dict[str, Any]]] | None = None
) -> tuple[str | None, list[dict[str, Any]]]:
    """(system, messages): system/developer messages become the system prompt; tool results go back
    as ``tool_result`` blocks of a user turn; consecutive turns of one role merge (the API wants
    them alternating). ``extras`` (signed thinking blocks) lead the assistant message they belong to."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for position, m in enumerate(messages):
        if m.role in ("system", "developer"):
            if m.text():
                system.append(m.text())
            continue
        role = "assistant" if m.role == "assistant" else "user"
        blocks = _blocks(m)
        if extras and role == "assistant" and position in extras:
            blocks = [*extras[position], *blocks]
        if not blocks:
            continue
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), out


def to_anthropic_params(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(max_tokens, other parameters); OpenAI's ``stop`` is Anthropic's ``stop_sequences``."""
    rest = dict(params)
    max_tokens = int(rest.pop("max_tokens", None) or rest.pop("max_completion_tokens", None) or DEFAULT_MAX_TOKENS)
    rest.pop("max_completion_tokens", None)
    stop = rest.pop("stop", None)
    if stop:
        rest["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    return max_tokens, rest


def to_anthropic_tools(call: CallSpec) -> list[dict[str, Any]]:
    """Every tool as an Anthropic tool (an empty description is left out)."""
    tools = []
    for t in call.tools:
        tool: dict[str, Any] = {"name": t.name}
        if t.description:
            tool["description"] = t.description
        tool["input_schema"] = t.parameters
        tools.append(tool)
    return tools


def to_anthropic_tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    """OpenAI's ``tool_choice`` and ``parallel_tool_calls`` as Anthropic's ``tool_choice``: ``required``
    is ``any``, a named function ``tool``; ``parallel_tool_calls: false`` is ``disable_parallel_tool_use``
    (which ``none`` does not take: no call at all is fewer than one)."""
    if choice is None and parallel is not False:
        return None
    if isinstance(choice, ForcedTool):
        out: dict[str, Any] = {"type": "tool", "name": choice.name}
    else:
        kind = choice or "auto"
        out = {"type": "any" if kind == "required" else kind}
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def response_format_problem(response_format: dict[str, Any] | None) -> str | None:
    """Why Anthropic cannot honour ``response_format``, or ``None``: it has structured outputs for a
    JSON schema, but no mode for "any JSON object"."""
    if response_format is None or response_format.get("type") in (None, "text", "json_schema"):
        return None
    return (
        f"type {response_format.get('type')!r} cannot be honoured by this agent's model (Anthropic); "
        "send type 'json_schema' with a schema instead"
    )


def to_anthropic_output_config(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """``json_schema`` as Anthropic's structured output (``output_config.format``); ``text``: nothing."""
    if not response_format or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
    return {"format": {"type": "json_schema", "schema": schema}}


class EventMapper:
    """Raw stream events → neutral chunks, tracking which content blocks are tool calls."""

    def __init__(self) -> None:
        self._tool_blocks: dict[int, int] = {}  # content block index → tool-call index in this call
        self._thinking: dict[int, dict[str, Any]] = {}  # content block index → thinking block so far
        self.finished = False

    def map(self, event: Any) -> list[Chunk]:
        kind = event.type
        if kind == "message_start":
            message = event.message
            rid, model = getattr(message, "id", None), getattr(message, "model", None)
            out: list[Chunk] = [
                ResponseInfo(id=rid if isinstance(rid, str) and rid else None, model=str(model) if model else None)
            ]
            usage = getattr(message, "usage", None)
            if usage is not None:
                out.append(UsageChunk(from_anthropic_start(usage)))
            return out
        if kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use":
                index = len(self._tool_blocks)
                self._tool_blocks[event.index] = index
                return [ToolCallChunk(index=index, id=block.id, name=block.name)]
            if block.type == "thinking":
                self._thinking[event.index] = {"type": "thinking", "thinking": "", "signature": ""}
            elif block.type == "redacted_thinking":
                self._thinking[event.index] = {"type": "redacted_thinking", "data": getattr(block, "data", "")}
            return []
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return [TextChunk(delta.text)] if delta.text else []
            if delta.type == "thinking_delta":
                if event.index in self._thinking:
                    self._thinking[event.index]["thinking"] += delta.thinking
                return [ReasoningChunk(delta.thinking)] if delta.thinking else []
            if delta.type == "signature_delta" and event.index in self._thinking:
                self._thinking[event.index]["signature"] += delta.signature
                return []
            if delta.type == "input_json_delta" and event.index in self._tool_blocks:
                return [ToolCallChunk(index=self._tool_blocks[event.index], arguments=delta.partial_json)]
            return []
        if kind == "content_block_stop" and event.index in self._thinking:
            return [OpaqueBlock(self._thinking.pop(event.index))]
        if kind == "message_delta":
            tail: list[Chunk] = []
            if getattr(event, "usage", None) is not None:
                tail.append(UsageChunk(from_anthropic_delta(event.usage)))
            stop = event.delta.stop_reason
            if stop:
                tail.append(FinishChunk(_STOP.get(stop, "stop"), raw=str(stop)))
            return tail
        if kind == "message_stop":
            self.finished = True
        return []


class AnthropicProvider:
    kind = "anthropic"

    def __init__(self, conn: Connection, timeout_s: float) -> None:
        self._conn = conn
        self._client = anthropic.AsyncAnthropic(**client_options(conn, timeout_s))

    async def close(self) -> None:
        await self._client.close()

    async def stream(self, call: CallSpec) -> AsyncGenerator[Chunk, None]:
        system, messages = to_anthropic(call.messages, call.extras)
        max_tokens, params = to_anthropic_params(call.params)
        tools = to_anthropic_tools(call)
        tool_choice = to_anthropic_tool_choice(call.tool_choice, call.parallel_tool_calls) if tools else None
        output_config = to_anthropic_output_config(call.response_format)
        try:
            stream = await self._client.messages.create(
                model=call.model,
                max_tokens=max_tokens,
                messages=cast(Any, messages),
                stream=True,
                system=system or anthropic.omit,
                tools=cast(Any, tools) if tools else anthropic.omit,
                tool_choice=cast(Any, tool_choice) if tool_choice else anthropic.omit,
                output_config=cast(Any, output_config) if output_config else anthropic.omit,
                extra_body=params or None,
            )
        except anthropic.APIError as exc:
            raise sdk_refusal(exc, self._conn.api_key) from None
        mapper = EventMapper()
        try:
            async for event in stream:
                for c in mapper.map(event):
                    yield c
        except (anthropic.APIError, httpx2.HTTPError) as exc:
            raise StreamBroken(redact(str(exc) or type(exc).__name__, self._conn.api_key)) from None
        finally:
            # Closing the response closes the HTTP request at once (cancel, or the consumer stopped).
            await stream.close()
        if not mapper.finished:
            raise StreamBroken("the stream ended before the model finished")
