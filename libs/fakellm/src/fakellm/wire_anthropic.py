"""Anthropic Messages wire format: the named events of a stream and the whole body."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from .script import Plan

Frame = tuple[bytes, bool]

STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens", "content_filter": "refusal"}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_body(status: int, message: str, type_: str | None) -> dict[str, Any]:
    default = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": "error", "error": {"type": type_ or default, "message": message}}


def _input_usage(p: Plan) -> dict[str, Any]:
    return {
        "input_tokens": p.uncached_input,
        "cache_creation_input_tokens": p.cache_write,
        "cache_read_input_tokens": p.cache_read,
    }


def stream(p: Plan, model: str, rid: str) -> Iterator[Frame]:
    start_usage = (
        {**_input_usage(p), "output_tokens": 1} if not p.omit_usage else {"input_tokens": 0, "output_tokens": 0}
    )
    message: dict[str, Any] = {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    yield _event("message_start", {"type": "message_start", "message": message}), False
    index = 0
    if p.reasoning:
        yield (
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                },
            ),
            False,
        )
        for tok in p.reasoning:
            yield (
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "thinking_delta", "thinking": tok},
                    },
                ),
                True,
            )
        yield (
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"},
                },
            ),
            False,
        )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), False
        index += 1
    if p.text:
        yield (
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
            ),
            False,
        )
        for tok in p.text:
            yield (
                _event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": tok}},
                ),
                True,
            )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), False
        index += 1
    for call in p.tool_calls:
        yield (
            _event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}},
                },
            ),
            False,
        )
        for chunk in call.chunks:
            yield (
                _event(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": chunk},
                    },
                ),
                True,
            )
        yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), False
        index += 1
    out_usage: dict[str, Any] = {"output_tokens": 0}
    if not p.omit_usage:
        out_usage = {"output_tokens": p.output_tokens, "output_tokens_details": {"thinking_tokens": p.reasoning_tokens}}
    yield (
        _event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": STOP.get(p.finish_reason, p.finish_reason), "stop_sequence": None},
                "usage": out_usage,
            },
        ),
        False,
    )
    yield _event("message_stop", {"type": "message_stop"}), False


def whole(p: Plan, model: str, rid: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if p.reasoning:
        content.append({"type": "thinking", "thinking": "".join(p.reasoning), "signature": "c2lnbmF0dXJl"})
    if p.text:
        content.append({"type": "text", "text": "".join(p.text)})
    for call in p.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
    usage = (
        {**_input_usage(p), "output_tokens": p.output_tokens}
        if not p.omit_usage
        else {"input_tokens": 0, "output_tokens": 0}
    )
    return {
        "id": rid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP.get(p.finish_reason, p.finish_reason),
        "stop_sequence": None,
        "usage": usage,
    }
