"""Run events → OpenAI chat wire format: pre-rendered SSE chunks, and the aggregated ``chat.completion``.

Pure and framework-free. Every streamed chunk of a completion shares its id, created and model, so
the constant head and tail of a chunk are rendered once; a text delta then costs one ``orjson.dumps``
of the delta string and a few byte concatenations.
"""

from __future__ import annotations

from typing import Any

import orjson

from contracts import (
    ErrorInfo,
    ReasoningDelta,
    RunCompleted,
    RunEvent,
    TextDelta,
    TokenUsage,
    ToolCallArgumentsDelta,
    ToolCallStarted,
)

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


def usage_object(usage: TokenUsage) -> dict[str, Any]:
    """OpenAI's ``CompletionUsage`` of what was billed: the prompt counts cache writes and reads."""
    prompt = usage.input_tokens + usage.cache_write_tokens + usage.cache_read_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def error_chunk(info: ErrorInfo) -> bytes:
    """The in-stream error: a data frame with a top-level ``error`` (the SDK raises ``APIError`` on it)."""
    return b"data: " + orjson.dumps(info.envelope()) + b"\n\n"


class ChunkRenderer:
    """Renders the SSE frames of one streamed chat completion."""

    __slots__ = ("_head", "_meta", "_open_tail", "_usage_null", "completion_id", "created", "include_usage", "model")

    def __init__(self, completion_id: str, created: int, model: str, *, include_usage: bool) -> None:
        self.completion_id = completion_id
        self.created = created
        self.model = model
        self.include_usage = include_usage
        self._meta = (
            b'{"id":'
            + orjson.dumps(completion_id)
            + b',"object":"chat.completion.chunk","created":'
            + str(int(created)).encode()
            + b',"model":'
            + orjson.dumps(model)
        )
        self._head = b"data: " + self._meta + b',"choices":[{"index":0,"delta":'
        # Per the spec, with include_usage every chunk but the last carries "usage": null; without, no key.
        self._usage_null = b',"usage":null' if include_usage else b""
        self._open_tail = b',"logprobs":null,"finish_reason":null}]' + self._usage_null + b"}\n\n"

    def delta(self, delta_json: bytes) -> bytes:
        return self._head + delta_json + self._open_tail

    def role(self) -> bytes:
        return self.delta(b'{"role":"assistant","content":""}')

    def text(self, text: str) -> bytes:
        return self._head + b'{"content":' + orjson.dumps(text) + b"}" + self._open_tail

    def reasoning(self, text: str) -> bytes:
        # OpenRouter's convention for reasoning in chat deltas; clients that don't know it ignore it.
        return self._head + b'{"reasoning":' + orjson.dumps(text) + b"}" + self._open_tail

    def tool_call_started(self, index: int, call_id: str, name: str) -> bytes:
        call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        return self.delta(orjson.dumps({"tool_calls": [call]}))

    def tool_call_arguments(self, index: int, fragment: str) -> bytes:
        # Only index and the fragment: repeating id or name makes the SDK's accumulator double them.
        return self.delta(orjson.dumps({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))

    def finish(self, finish_reason: str) -> bytes:
        return (
            self._head
            + b'{},"logprobs":null,"finish_reason":'
            + orjson.dumps(finish_reason)
            + b"}]"
            + self._usage_null
            + b"}\n\n"
        )

    def usage(self, usage: TokenUsage) -> bytes:
        return b"data: " + self._meta + b',"choices":[],"usage":' + orjson.dumps(usage_object(usage)) + b"}\n\n"

    def event(self, event: RunEvent) -> bytes | None:
        """The frame for a content event (text, reasoning, tool call); ``None`` for events that send nothing."""
        kind = type(event)
        if kind is TextDelta:
            return self.text(event.delta)  # type: ignore[union-attr]
        if kind is ReasoningDelta:
            return self.reasoning(event.delta)  # type: ignore[union-attr]
        if kind is ToolCallArgumentsDelta:
            return self.tool_call_arguments(event.index, event.delta)  # type: ignore[union-attr]
        if kind is ToolCallStarted:
            return self.tool_call_started(event.index, event.call_id, event.name)  # type: ignore[union-attr]
        return None

    def completed(self, event: RunCompleted) -> bytes:
        """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
        out = self.finish(event.finish_reason)
        if self.include_usage:
            out += self.usage(event.usage)
        return out + DONE


class CompletionAggregator:
    """Collects a run's events into one ``chat.completion`` (non-streaming answers)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, event: RunEvent) -> None:
        kind = type(event)
        if kind is TextDelta:
            self._text.append(event.delta)  # type: ignore[union-attr]
        elif kind is ReasoningDelta:
            self._reasoning.append(event.delta)  # type: ignore[union-attr]
        elif kind is ToolCallStarted:
            self._calls[event.index] = {"id": event.call_id, "name": event.name, "arguments": []}  # type: ignore[union-attr]
        elif kind is ToolCallArgumentsDelta:
            call = self._calls.get(event.index)  # type: ignore[union-attr]
            if call is not None:
                call["arguments"].append(event.delta)  # type: ignore[union-attr]

    def message(self) -> dict[str, Any]:
        text = "".join(self._text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if (text or not self._calls) else None,
            "refusal": None,
        }
        if self._reasoning:
            message["reasoning"] = "".join(self._reasoning)
        if self._calls:
            message["tool_calls"] = [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": "".join(c["arguments"])},
                }
                for _, c in sorted(self._calls.items())
            ]
        return message

    def completion(self, completion_id: str, created: int, model: str, done: RunCompleted) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": self.message(), "logprobs": None, "finish_reason": done.finish_reason}],
            "usage": usage_object(done.usage),
        }
