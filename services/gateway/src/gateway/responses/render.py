"""Run events → the Responses API's stream events and ``Response`` body. Pure and deterministic.

:class:`ResponseRenderer` is fed a run's events in ``seq`` order and returns the stream events each
one makes, numbered from 0 without gaps. Everything it renders is a function of the response's
skeleton (the ``Response`` as created, kept in the store) and the run's events: item ids are the
response id and the output index, ``completed_at`` is the terminal event's timestamp. So two replicas
rendering the same run render the same events with the same ``sequence_number`` — a stream can be
resumed anywhere by rendering again and skipping what the client has.

The items, in the order the run makes them:

- ``reasoning`` (``ReasoningDelta``): ``response.reasoning_text.delta``/``.done``;
- ``message`` (``TextDelta``): ``content_part.added``, ``output_text.delta``…, ``output_text.done``,
  ``content_part.done``; text after a tool call starts a new message;
- ``mcp_call`` (an agent tool: ``ToolCallStarted`` with ``client`` false): ``mcp_call.in_progress``,
  ``mcp_call_arguments.delta``/``.done``, then ``mcp_call.completed`` or ``.failed`` with its
  ``ToolResult``;
- ``function_call`` (a client function: ``client`` true): ``function_call_arguments.delta``/``.done``.

Every item added is done before the terminal event; an item the run never finished is done as
``incomplete``. A failure is an ``error`` event then ``response.failed``; a cancelled run ends with
``response.failed`` whose status is ``cancelled``.
"""

from __future__ import annotations

import copy
from typing import Any

import orjson

from contracts import (
    ErrorInfo,
    ReasoningDelta,
    RunCompleted,
    RunEvent,
    RunFailed,
    TextDelta,
    TokenUsage,
    ToolCallArgumentsDelta,
    ToolCallStarted,
    ToolResult,
)

from ..render import usage_object

Event = dict[str, Any]
#: Statuses after which nothing changes.
TERMINAL_STATUSES = frozenset({"completed", "failed", "incomplete", "cancelled"})


def response_usage(usage: TokenUsage) -> dict[str, Any]:
    """The ``ResponseUsage`` of what was billed: input counts cache writes and reads (as chat's prompt does)."""
    chat = usage_object(usage)
    return {
        "input_tokens": chat["prompt_tokens"],
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens,
            "cache_write_tokens": usage.cache_write_tokens,
        },
        "output_tokens": chat["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": chat["total_tokens"],
    }


def response_error(info: ErrorInfo) -> dict[str, str]:
    """A failed response's ``error``: OpenAI's codes are an enum, so a rate limit keeps its code and the
    rest are ``server_error`` (the message says what happened)."""
    code = "rate_limit_exceeded" if info.status == 429 else "server_error"
    return {"code": code, "message": info.message}


def sse_frame(event: Event) -> bytes:
    """``event: <type>`` and ``data: <json>``, as OpenAI frames a Responses stream."""
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


def item_id(prefix: str, response_id: str, index: int) -> str:
    """A deterministic item id: the kind, the response's own id part and the item's place."""
    tag = response_id.split("_", 1)[-1]
    return f"{prefix}_{tag}_{index}"


class ResponseRenderer:
    """Renders one response's stream, event by event (see the module docstring)."""

    def __init__(self, skeleton: dict[str, Any]) -> None:
        self.response: dict[str, Any] = copy.deepcopy(skeleton)
        self.response["output"] = []
        self.output: list[dict[str, Any]] = self.response["output"]
        self.seq = 0
        self.finished = False
        self._id = str(skeleton["id"])
        self._text: int | None = None
        self._reasoning: int | None = None
        #: The run's tool-call index → output index.
        self._calls: dict[int, int] = {}
        #: Output indexes of calls whose arguments may still grow.
        self._args_open: list[int] = []
        #: Output index → the call id the model gave (what a continuation sends the provider).
        self.call_ids: dict[int, str] = {}

    # --- events -------------------------------------------------------------------------------------
    def _emit(self, out: list[Event], event: Event) -> None:
        event["sequence_number"] = self.seq
        self.seq += 1
        out.append(event)

    def _lifecycle(self, out: list[Event], kind: str) -> None:
        self._emit(out, {"type": kind, "response": copy.deepcopy(self.response)})

    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``: the first two events of every stream."""
        out: list[Event] = []
        self.response["status"] = "in_progress"
        self._lifecycle(out, "response.created")
        self._lifecycle(out, "response.in_progress")
        return out

    def feed(self, event: RunEvent) -> list[Event]:
        """The stream events one run event makes (none for heartbeats, usage and ``started``)."""
        if self.finished:
            return []
        out: list[Event] = []
        kind = type(event)
        if kind is TextDelta:
            self._close_args(out)
            self._text_delta(out, event.delta)  # type: ignore[union-attr]
        elif kind is ReasoningDelta:
            self._close_args(out)
            self._reasoning_delta(out, event.delta)  # type: ignore[union-attr]
        elif kind is ToolCallStarted:
            self._close_text(out)
            self._close_reasoning(out)
            self._call_started(out, event)  # type: ignore[arg-type]
        elif kind is ToolCallArgumentsDelta:
            self._call_arguments(out, event.index, event.delta)  # type: ignore[union-attr]
        elif kind is ToolResult:
            self._close_args(out)
            self._tool_result(out, event)  # type: ignore[arg-type]
        elif kind is RunCompleted:
            self._completed(out, event)  # type: ignore[arg-type]
        elif kind is RunFailed:
            self._failed(out, event)  # type: ignore[arg-type]
        return out

    # --- items --------------------------------------------------------------------------------------
    def _add_item(self, out: list[Event], item: dict[str, Any]) -> int:
        index = len(self.output)
        self.output.append(item)
        self._emit(out, {"type": "response.output_item.added", "output_index": index, "item": copy.deepcopy(item)})
        return index

    def _item_done(self, out: list[Event], index: int, status: str = "completed") -> None:
        item = self.output[index]
        item["status"] = status
        self._emit(out, {"type": "response.output_item.done", "output_index": index, "item": copy.deepcopy(item)})

    def _text_delta(self, out: list[Event], delta: str) -> None:
        if self._reasoning is not None:
            self._close_reasoning(out)
        if self._text is None:
            index = len(self.output)
            self._text = self._add_item(
                out,
                {
                    "id": item_id("msg", self._id, index),
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            )
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            self.output[index]["content"].append(part)
            self._emit(
                out,
                {
                    "type": "response.content_part.added",
                    "item_id": self.output[index]["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": dict(part, annotations=[], logprobs=[]),
                },
            )
        index = self._text
        item = self.output[index]
        item["content"][0]["text"] += delta
        self._emit(
            out,
            {
                "type": "response.output_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": delta,
                "logprobs": [],
            },
        )

    def _close_text(self, out: list[Event], status: str = "completed") -> None:
        if self._text is None:
            return
        index, self._text = self._text, None
        item = self.output[index]
        part = item["content"][0]
        self._emit(
            out,
            {
                "type": "response.output_text.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "text": part["text"],
                "logprobs": [],
            },
        )
        self._emit(
            out,
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": copy.deepcopy(part),
            },
        )
        self._item_done(out, index, status)

    def _reasoning_delta(self, out: list[Event], delta: str) -> None:
        if self._text is not None:
            self._close_text(out)
        if self._reasoning is None:
            index = len(self.output)
            self._reasoning = self._add_item(
                out,
                {
                    "id": item_id("rs", self._id, index),
                    "type": "reasoning",
                    "summary": [],
                    "content": [],
                    "status": "in_progress",
                },
            )
            self.output[index]["content"].append({"type": "reasoning_text", "text": ""})
        index = self._reasoning
        item = self.output[index]
        item["content"][0]["text"] += delta
        self._emit(
            out,
            {
                "type": "response.reasoning_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": delta,
            },
        )

    def _close_reasoning(self, out: list[Event], status: str = "completed") -> None:
        if self._reasoning is None:
            return
        index, self._reasoning = self._reasoning, None
        item = self.output[index]
        self._emit(
            out,
            {
                "type": "response.reasoning_text.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "text": item["content"][0]["text"],
            },
        )
        self._item_done(out, index, status)

    def _call_started(self, out: list[Event], event: ToolCallStarted) -> None:
        index = len(self.output)
        if event.client:
            item: dict[str, Any] = {
                "id": item_id("fc", self._id, index),
                "type": "function_call",
                "call_id": event.call_id,
                "name": event.name,
                "arguments": "",
                "status": "in_progress",
            }
        else:
            item = {
                "id": item_id("mcp", self._id, index),
                "type": "mcp_call",
                "server_label": event.server_label,
                "name": event.name,
                "arguments": "",
                "output": None,
                "error": None,
                "status": "in_progress",
            }
        self._add_item(out, item)
        self._calls[event.index] = index
        self.call_ids[index] = event.call_id
        self._args_open.append(index)
        if not event.client:
            self._emit(out, {"type": "response.mcp_call.in_progress", "item_id": item["id"], "output_index": index})

    def _call_arguments(self, out: list[Event], call_index: int, delta: str) -> None:
        index = self._calls.get(call_index)
        if index is None or index not in self._args_open:
            return  # arguments for a call never started (or already done): nothing to attach them to
        item = self.output[index]
        item["arguments"] += delta
        kind = (
            "response.function_call_arguments.delta"
            if item["type"] == "function_call"
            else ("response.mcp_call_arguments.delta")
        )
        self._emit(out, {"type": kind, "item_id": item["id"], "output_index": index, "delta": delta})

    def _close_args(self, out: list[Event], status: str = "completed") -> None:
        """The arguments of every call still growing are complete: the model moved on."""
        for index in self._args_open:
            item = self.output[index]
            if item["type"] == "function_call":
                self._emit(
                    out,
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "name": item["name"],
                        "output_index": index,
                        "arguments": item["arguments"],
                    },
                )
                # The client runs it: as far as this response goes, the call is made.
                self._item_done(out, index, status)
            else:
                self._emit(
                    out,
                    {
                        "type": "response.mcp_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": item["arguments"],
                    },
                )
        self._args_open.clear()

    def _tool_result(self, out: list[Event], event: ToolResult) -> None:
        index = self._calls.get(event.index)
        if index is None:
            return
        item = self.output[index]
        if item["type"] != "mcp_call" or item["status"] != "in_progress":
            return
        if event.is_error:
            item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": event.output}]}
            self._emit(out, {"type": "response.mcp_call.failed", "item_id": item["id"], "output_index": index})
            self._item_done(out, index, "failed")
        else:
            item["output"] = event.output
            self._emit(out, {"type": "response.mcp_call.completed", "item_id": item["id"], "output_index": index})
            self._item_done(out, index, "completed")

    def _close_all(self, out: list[Event], status: str) -> None:
        self._close_args(out, status)
        self._close_text(out, status)
        self._close_reasoning(out, status)
        for index, item in enumerate(self.output):
            if item.get("status") == "in_progress":  # an agent tool that never reported its result
                self._item_done(out, index, "incomplete")

    # --- the end ------------------------------------------------------------------------------------
    def _finish(self, event: RunCompleted | RunFailed, status: str) -> None:
        self.finished = True
        self.response["status"] = status
        self.response["completed_at"] = int(event.ts.timestamp()) if status == "completed" else None
        self.response["usage"] = response_usage(event.usage)

    def _completed(self, out: list[Event], event: RunCompleted) -> None:
        incomplete = event.finish_reason in ("length", "content_filter")
        self._close_all(out, "incomplete" if incomplete else "completed")
        if incomplete:
            reason = "max_output_tokens" if event.finish_reason == "length" else "content_filter"
            self._finish(event, "incomplete")
            self.response["incomplete_details"] = {"reason": reason}
            self._lifecycle(out, "response.incomplete")
        else:
            self._finish(event, "completed")
            self._lifecycle(out, "response.completed")

    def _failed(self, out: list[Event], event: RunFailed) -> None:
        self._close_all(out, "incomplete")
        info = event.error
        if info.code == "cancelled":
            self._finish(event, "cancelled")
        else:
            self._finish(event, "failed")
            self.response["error"] = response_error(info)
            # The SDK raises on a data frame carrying "error": the event says what failed, in both shapes.
            self._emit(
                out,
                {
                    "type": "error",
                    "code": info.code or info.type,
                    "message": info.message,
                    "param": info.param,
                    "error": {"type": info.type, "code": info.code, "message": info.message, "param": info.param},
                },
            )
        self._lifecycle(out, "response.failed")

    # --- views --------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The ``Response`` as it stands (a copy)."""
        return copy.deepcopy(self.response)
