"""The runner's spans as the OpenTelemetry GenAI semantic conventions name them.

``invoke_agent {agent}`` (INTERNAL) for a run, ``chat {model}`` (CLIENT) for each model call,
``execute_tool {tool}`` (INTERNAL) for each tool call. This module builds their attributes: what was
asked (once per run), what the provider answered and what it cost (once per call, when the call ends:
nothing is set per token).

Message content (the prompt, the answer, tool arguments and results) is never on a span unless the
operator turns it on with ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``; then it goes in
``gen_ai.input.messages`` / ``gen_ai.output.messages`` (the conventions' message JSON, as a string)
and ``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from contracts import ChatMessage, TokenUsage

#: The standard switch of message content capture (instrumentations of the OpenTelemetry project read it too).
CAPTURE_CONTENT_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: Values that turn capture on: a boolean ``true``, or the newer instrumentations' modes that put it on spans.
_CAPTURE_ON = frozenset({"true", "1", "yes", "on", "span_only", "span_and_event"})

#: Where a connection without a base URL goes (the SDKs' defaults).
_DEFAULT_HOSTS = {"openai": "api.openai.com", "anthropic": "api.anthropic.com"}

#: Request parameters reported on a chat span, under their convention names.
_REQUEST_PARAMETERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}


def capture_enabled(value: str | None) -> bool:
    """Whether the capture setting's value turns message content on (anything else, unset included: off)."""
    return (value or "").strip().lower() in _CAPTURE_ON


def provider_name(kind: str) -> str:
    """``gen_ai.provider.name``: ``openai``, ``anthropic`` (the conventions' values), else the name in lower case."""
    return kind.strip().lower()


def server_attributes(kind: str, base_url: str | None) -> dict[str, Any]:
    """``server.address`` / ``server.port`` of a connection."""
    if not base_url:
        host = _DEFAULT_HOSTS.get(kind)
        return {"server.address": host, "server.port": 443} if host else {}
    url = urlsplit(base_url)
    if not url.hostname:
        return {}
    return {"server.address": url.hostname, "server.port": url.port or (443 if url.scheme == "https" else 80)}


def chat_attributes(
    *,
    kind: str,
    base_url: str | None,
    model: str,
    params: Mapping[str, Any],
    conversation_id: str | None,
) -> dict[str, Any]:
    """What every chat span of a run starts with (built once per run)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": provider_name(kind),
        "gen_ai.request.model": model,
        **server_attributes(kind, base_url),
    }
    for name, key in _REQUEST_PARAMETERS.items():
        value = params.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and key not in attributes:
            attributes[key] = value
    stop = params.get("stop")
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = list(stop)
    if conversation_id:
        attributes["gen_ai.conversation.id"] = conversation_id
    return attributes


def usage_attributes(usage: TokenUsage) -> dict[str, int]:
    """``gen_ai.usage.*`` of a call (or a run's total). Input counts every prompt token, cached ones
    included; the cache and reasoning figures are parts of input and output, present when not zero."""
    attributes = {
        "gen_ai.usage.input_tokens": usage.prompt_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    if usage.cache_read_tokens:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attributes["gen_ai.usage.reasoning.output_tokens"] = usage.reasoning_tokens
    return attributes


def response_attributes(
    *,
    response_id: str | None,
    response_model: str | None,
    finish_reasons: Sequence[str],
    usage: TokenUsage,
    estimated: bool,
    context: str,
) -> dict[str, Any]:
    """What a chat span ends with: the provider's response id and model, why the model stopped (the
    provider's own words), the tokens billed for the call, and whether they are the provider's count."""
    attributes: dict[str, Any] = usage_attributes(usage)
    if response_id:
        attributes["gen_ai.response.id"] = response_id
    if response_model:
        attributes["gen_ai.response.model"] = response_model
    if finish_reasons:
        attributes["gen_ai.response.finish_reasons"] = list(finish_reasons)
    attributes["switchboard.usage.estimated"] = estimated
    attributes["switchboard.usage.context"] = context
    return attributes


# --- opt-in content ---------------------------------------------------------------------------------
def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [{"type": "tool_call_response", "id": message.tool_call_id or "", "response": message.text()}]
    parts: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"type": "text", "content": message.content})
    elif message.content:
        for part in message.content:
            kind = part.get("type")
            if kind in ("text", "input_text", "output_text"):
                parts.append({"type": "text", "content": str(part.get("text", ""))})
            else:
                # Images and files: named, not copied (a data URL would make the span megabytes).
                parts.append({"type": str(kind or "unknown")})
    for call in message.tool_calls or ():
        arguments = _json(call.function.arguments)
        parts.append({"type": "tool_call", "id": call.id, "name": call.function.name, "arguments": arguments})
    return parts


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return text


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def input_messages(messages: Iterable[ChatMessage]) -> str:
    """``gen_ai.input.messages``: the conversation sent to the model (system instructions included)."""
    return _dumps([{"role": m.role, "parts": _parts(m)} for m in messages])


def output_messages(text: str, tool_calls: Iterable[tuple[str, str, str]], finish_reason: str | None) -> str:
    """``gen_ai.output.messages``: the model's answer — its text and its tool calls (id, name, arguments)."""
    parts: list[dict[str, Any]] = [{"type": "text", "content": text}] if text else []
    for call_id, name, arguments in tool_calls:
        parts.append({"type": "tool_call", "id": call_id, "name": name, "arguments": _json(arguments)})
    return _dumps([{"role": "assistant", "parts": parts, "finish_reason": finish_reason or ""}])
