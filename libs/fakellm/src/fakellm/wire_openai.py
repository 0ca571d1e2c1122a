"""OpenAI chat completions wire format: the chunks of a stream and the whole body."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson

from .script import Plan

Frame = tuple[bytes, bool]  # (bytes to send, whether it carries a token)


def usage(p: Plan) -> dict[str, Any]:
    return {
        "prompt_tokens": p.prompt_tokens,
        "completion_tokens": p.output_tokens,
        "total_tokens": p.prompt_tokens + p.output_tokens,
        "prompt_tokens_details": {
            "cached_tokens": p.cache_read,
            "cache_write_tokens": p.cache_write,
            "audio_tokens": 0,
        },
        "completion_tokens_details": {
            "reasoning_tokens": p.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def error_body(status: int, message: str, type_: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": type_ or ("server_error" if status >= 500 else "invalid_request_error"),
            "param": None,
            "code": None,
        }
    }


def stream(p: Plan, model: str, include_usage: bool, rid: str) -> Iterator[Frame]:
    created = int(time.time())
    head = orjson.dumps({"id": rid, "object": "chat.completion.chunk", "created": created, "model": model})[:-1]
    tail = b',"usage":null}\n\n' if include_usage else b"}\n\n"

    def frame(choices: Any) -> bytes:
        return b"data: " + head + b',"choices":' + orjson.dumps(choices) + tail

    def delta(d: dict[str, Any], finish: str | None = None) -> bytes:
        return frame([{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}])

    yield delta({"role": "assistant", "content": ""}), False
    for tok in p.reasoning:
        yield delta({p.reasoning_field: tok}), True
    for tok in p.text:
        yield delta({"content": tok}), True
    for i, call in enumerate(p.tool_calls):
        if p.tool_call_index is not None:  # whole, unnumbered or all at 0 (Gemini's endpoint)
            tc: dict[str, Any] = {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            if p.tool_call_index == "zero":
                tc["index"] = 0
            if call.extra_content is not None:
                tc["extra_content"] = call.extra_content
            yield delta({"tool_calls": [tc]}), True
            continue
        first = True
        for chunk in call.chunks:
            if first:
                d = {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": chunk},
                        }
                    ]
                }
                first = False
            else:
                d = {"tool_calls": [{"index": i, "function": {"arguments": chunk}}]}
            yield delta(d), True
    yield delta({}, p.finish_reason), False
    if include_usage and not p.omit_usage:
        yield b"data: " + head + b',"choices":[],"usage":' + orjson.dumps(usage(p)) + b"}\n\n", False
    yield b"data: [DONE]\n\n", False


def whole(p: Plan, model: str, rid: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": "".join(p.text) or None, "refusal": None}
    if p.reasoning:
        message[p.reasoning_field] = "".join(p.reasoning)
    if p.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in p.tool_calls
        ]
    body: dict[str, Any] = {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": p.finish_reason}],
    }
    if not p.omit_usage:
        body["usage"] = usage(p)
    return body
