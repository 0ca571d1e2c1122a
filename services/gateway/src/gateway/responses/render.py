"""Run events → the Responses API's stream events and ``Response`` body. Pure and deterministic.

:class:`ResponseRenderer` is fed a run's events in ``seq`` order and returns the stream events each
one makes, numbered from 0 without gaps. Everything it renders is a function of the response's
skeleton (the ``Response`` as created, kept in the store) and the run's events: item ids are the
response id and the output index, ``completed_at`` is the terminal event's timestamp. So two replicas
rendering the same run render the same events with the same ``sequence_number`` — a stream can be
resumed anywhere by rendering again and skipping what the client has.

The items, in the order the run makes them:

- ``reasoning`` (``ReasoningDelta``): ``content_part.added`` (a ``reasoning_text`` part),
  ``response.reasoning_text.delta``…, ``.done``, ``content_part.done``;
- ``message`` (``TextDelta``): ``content_part.added``, ``output_text.delta``…, ``output_text.done``,
  ``content_part.done``; text after a tool call starts a new message;
- ``mcp_call`` (an agent tool: ``ToolCallStarted`` with ``client`` false): ``mcp_call.in_progress``,
  ``mcp_call_arguments.delta``/``.done``, then ``mcp_call.completed`` or ``.failed`` with its
  ``ToolResult``;
- ``function_call`` (a client function: ``client`` true): ``function_call_arguments.delta``/``.done``.

Every item added is done before the terminal event; an item the run never finished is done as
``incomplete``. A failure is an ``error`` event then ``response.failed``; a cancelled run ends with
``response.failed`` whose status is ``cancelled``.

The same rendering has three outputs: :meth:`~ResponseRenderer.feed` returns the events as dicts
(each its own copy), :meth:`~ResponseRenderer.feed_frames` returns them as SSE bytes ready to send,
and :meth:`~ResponseRenderer.advance` only moves the response on (a caller that answers with the
final ``Response``). A stream's per-token work is the frames path's: each ``output_text.delta``
frame is the item's constant bytes, the delta's JSON and its ``sequence_number`` — no dict is built
or dumped, nothing is copied (:meth:`ResponseRenderer._text_delta`). The frames are byte for byte
what :func:`sse_frame` makes of the events ``feed`` returns (a unit test holds them to it).
"""

from __future__ import annotations

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


#: Where a renderer's events go (see :class:`ResponseRenderer`): copied dicts, SSE bytes, nowhere.
_EVENTS, _FRAMES, _STATE = 0, 1, 2


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (what a response is), several times faster than :func:`copy.deepcopy`."""
    return orjson.loads(orjson.dumps(value))


def _delta_head(item: str, index: int) -> bytes:
    """The constant start of an item's ``response.output_text.delta`` frames, up to the delta's JSON."""
    return (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","item_id":'
        + orjson.dumps(item)
        + b',"output_index":%d,"content_index":0,"delta":' % index
    )


def item_id(prefix: str, response_id: str, index: int) -> str:
    """A deterministic item id: the kind, the response's own id part and the item's place."""
    tag = response_id.split("_", 1)[-1]
    return f"{prefix}_{tag}_{index}"


class ResponseRenderer:
    """Renders one response's stream, event by event (see the module docstring)."""

    def __init__(self, skeleton: dict[str, Any]) -> None:
        self.response: dict[str, Any] = json_copy(skeleton)
        self.response["output"] = []
        self.output: list[dict[str, Any]] = self.response["output"]
        self.seq = 0
        self.finished = False
        self._id = str(skeleton["id"])
        self._text: int | None = None
        #: The open message's text so far, joined into its part when the part is read (one join, not
        #: a string copied per delta); its delta frames' constant start.
        self._text_parts: list[str] = []
        self._text_head = b""
        self._reasoning: int | None = None
        #: The run's tool-call index → output index.
        self._calls: dict[int, int] = {}
        #: Output indexes of calls whose arguments may still grow.
        self._args_open: list[int] = []
        #: Output index → the call id the model gave (what a continuation sends the provider).
        self.call_ids: dict[int, str] = {}
        # Where the current call's events go (set by each public call; see the module docstring).
        self._mode = _EVENTS
        self._events: list[Event] = []
        self._frames: list[bytes] = []
        self._after = -1

    # --- outputs ------------------------------------------------------------------------------------
    def start(self) -> list[Event]:
        """``response.created`` and ``response.in_progress``: the first two events of every stream."""
        self._to(_EVENTS, -1)
        self._start()
        return self._take_events()

    def start_frames(self, after: int = -1) -> bytes:
        """:meth:`start` as SSE frames, those numbered after ``after`` only."""
        self._to(_FRAMES, after)
        self._start()
        return self._take_frames()

    def feed(self, event: RunEvent) -> list[Event]:
        """The stream events one run event makes (none for heartbeats, usage and ``started``)."""
        self._to(_EVENTS, -1)
        self._feed(event)
        return self._take_events()

    def feed_frames(self, event: RunEvent, after: int = -1) -> bytes:
        """:meth:`feed` as SSE frames, those numbered after ``after`` only (a resumed stream)."""
        if type(event) is TextDelta and self._text is not None and not self._args_open and not self.finished:
            # One more token of the open message, the bulk of a stream: its frame, and nothing else.
            delta = event.delta
            self._text_parts.append(delta)
            seq = self.seq
            self.seq = seq + 1
            if seq <= after:
                return b""
            return self._delta_frame(delta, seq)
        self._to(_FRAMES, after)
        self._feed(event)
        return self._take_frames()

    def begin(self) -> None:
        """:meth:`start` without its events."""
        self._to(_STATE, -1)
        self._start()

    def advance(self, event: RunEvent) -> None:
        """:meth:`feed` without its events: the response moves on, nothing is rendered."""
        self._to(_STATE, -1)
        self._feed(event)

    def _to(self, mode: int, after: int) -> None:
        self._mode, self._after = mode, after

    def _take_events(self) -> list[Event]:
        events, self._events = self._events, []
        return events

    def _take_frames(self) -> bytes:
        frames = b"".join(self._frames)
        self._frames.clear()
        return frames

    # --- events -------------------------------------------------------------------------------------
    def _emit(self, event: Event) -> None:
        """Number an event and send it where the current call's output goes. The event may hold the
        renderer's own state (the response, an item): a frame is its JSON at this moment, a dict
        event a deep copy, so that later changes never reach either."""
        seq = self.seq
        self.seq = seq + 1
        mode = self._mode
        if mode == _STATE:
            return
        event["sequence_number"] = seq
        if mode == _FRAMES:
            if seq > self._after:
                self._frames.append(sse_frame(event))
        else:
            self._events.append(json_copy(event))

    def _lifecycle(self, kind: str) -> None:
        self._sync_text()
        self._emit({"type": kind, "response": self.response})

    def _start(self) -> None:
        self.response["status"] = "in_progress"
        self._lifecycle("response.created")
        self._lifecycle("response.in_progress")

    def _feed(self, event: RunEvent) -> None:
        if self.finished:
            return
        kind = type(event)
        if kind is TextDelta:
            if self._text is not None and not self._args_open:  # the hot path: one more token
                self._text_delta(event.delta)  # type: ignore[union-attr]
                return
            self._close_args()
            self._text_delta(event.delta)  # type: ignore[union-attr]
        elif kind is ReasoningDelta:
            self._close_args()
            self._reasoning_delta(event.delta)  # type: ignore[union-attr]
        elif kind is ToolCallStarted:
            self._close_text()
            self._close_reasoning()
            self._call_started(event)  # type: ignore[arg-type]
        elif kind is ToolCallArgumentsDelta:
            self._call_arguments(event.index, event.delta)  # type: ignore[union-attr]
        elif kind is ToolResult:
            self._close_args()
            self._tool_result(event)  # type: ignore[arg-type]
        elif kind is RunCompleted:
            self._completed(event)  # type: ignore[arg-type]
        elif kind is RunFailed:
            self._failed(event)  # type: ignore[arg-type]

    # --- items --------------------------------------------------------------------------------------
    def _add_item(self, item: dict[str, Any]) -> int:
        index = len(self.output)
        self.output.append(item)
        self._emit({"type": "response.output_item.added", "output_index": index, "item": item})
        return index

    def _item_done(self, index: int, status: str = "completed") -> None:
        item = self.output[index]
        item["status"] = status
        self._emit({"type": "response.output_item.done", "output_index": index, "item": item})

    def _text_delta(self, delta: str) -> None:
        if self._text is None:
            self._open_text()
        self._text_parts.append(delta)
        seq = self.seq
        self.seq = seq + 1
        mode = self._mode
        if mode == _FRAMES:
            if seq > self._after:
                self._frames.append(self._delta_frame(delta, seq))
        elif mode == _EVENTS:
            index = self._text
            self._events.append(
                {
                    "type": "response.output_text.delta",
                    "item_id": self.output[index]["id"],  # type: ignore[index]
                    "output_index": index,
                    "content_index": 0,
                    "delta": delta,
                    "logprobs": [],
                    "sequence_number": seq,
                }
            )

    def _delta_frame(self, delta: str, seq: int) -> bytes:
        """An ``output_text.delta`` frame of the open message: its constant bytes, the delta, the number."""
        return self._text_head + orjson.dumps(delta) + b',"logprobs":[],"sequence_number":%d}\n\n' % seq

    def _open_text(self) -> None:
        """A new message item and its one ``output_text`` part (text after reasoning closes it first)."""
        if self._reasoning is not None:
            self._close_reasoning()
        index = len(self.output)
        message_id = item_id("msg", self._id, index)
        self._text = self._add_item(
            {"id": message_id, "type": "message", "role": "assistant", "status": "in_progress", "content": []}
        )
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self.output[index]["content"].append(part)
        self._emit(
            {
                "type": "response.content_part.added",
                "item_id": message_id,
                "output_index": index,
                "content_index": 0,
                "part": part,
            },
        )
        self._text_parts = []
        self._text_head = _delta_head(message_id, index)

    def _sync_text(self) -> None:
        """The open message's part holds its text so far (before anything reads it)."""
        if self._text is not None and self._text_parts:
            part = self.output[self._text]["content"][0]
            part["text"] += "".join(self._text_parts)
            self._text_parts = []

    def _close_text(self, status: str = "completed") -> None:
        if self._text is None:
            return
        self._sync_text()
        index, self._text = self._text, None
        item = self.output[index]
        part = item["content"][0]
        self._emit(
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
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": part,
            },
        )
        self._item_done(index, status)

    def _reasoning_delta(self, delta: str) -> None:
        if self._text is not None:
            self._close_text()
        if self._reasoning is None:
            index = len(self.output)
            self._reasoning = self._add_item(
                {
                    "id": item_id("rs", self._id, index),
                    "type": "reasoning",
                    "summary": [],
                    "content": [],
                    "status": "in_progress",
                },
            )
            part = {"type": "reasoning_text", "text": ""}
            self.output[index]["content"].append(part)
            # The text's part is announced as a message's is: openai-node's stream helper accumulates
            # reasoning_text deltas into it, and throws without it.
            self._emit(
                {
                    "type": "response.content_part.added",
                    "item_id": self.output[index]["id"],
                    "output_index": index,
                    "content_index": 0,
                    "part": part,
                },
            )
        index = self._reasoning
        item = self.output[index]
        item["content"][0]["text"] += delta
        self._emit(
            {
                "type": "response.reasoning_text.delta",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "delta": delta,
            },
        )

    def _close_reasoning(self, status: str = "completed") -> None:
        if self._reasoning is None:
            return
        index, self._reasoning = self._reasoning, None
        item = self.output[index]
        self._emit(
            {
                "type": "response.reasoning_text.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "text": item["content"][0]["text"],
            },
        )
        self._emit(
            {
                "type": "response.content_part.done",
                "item_id": item["id"],
                "output_index": index,
                "content_index": 0,
                "part": item["content"][0],
            },
        )
        self._item_done(index, status)

    def _call_started(self, event: ToolCallStarted) -> None:
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
        self._add_item(item)
        self._calls[event.index] = index
        self.call_ids[index] = event.call_id
        self._args_open.append(index)
        if not event.client:
            self._emit({"type": "response.mcp_call.in_progress", "item_id": item["id"], "output_index": index})

    def _call_arguments(self, call_index: int, delta: str) -> None:
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
        self._emit({"type": kind, "item_id": item["id"], "output_index": index, "delta": delta})

    def _close_args(self, status: str = "completed") -> None:
        """The arguments of every call still growing are complete: the model moved on."""
        for index in self._args_open:
            item = self.output[index]
            if item["type"] == "function_call":
                self._emit(
                    {
                        "type": "response.function_call_arguments.done",
                        "item_id": item["id"],
                        "name": item["name"],
                        "output_index": index,
                        "arguments": item["arguments"],
                    },
                )
                # The client runs it: as far as this response goes, the call is made.
                self._item_done(index, status)
            else:
                self._emit(
                    {
                        "type": "response.mcp_call_arguments.done",
                        "item_id": item["id"],
                        "output_index": index,
                        "arguments": item["arguments"],
                    },
                )
        self._args_open.clear()

    def _tool_result(self, event: ToolResult) -> None:
        index = self._calls.get(event.index)
        if index is None:
            return
        item = self.output[index]
        if item["type"] != "mcp_call" or item["status"] != "in_progress":
            return
        if event.is_error:
            item["error"] = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": event.output}]}
            self._emit({"type": "response.mcp_call.failed", "item_id": item["id"], "output_index": index})
            self._item_done(index, "failed")
        else:
            item["output"] = event.output
            self._emit({"type": "response.mcp_call.completed", "item_id": item["id"], "output_index": index})
            self._item_done(index, "completed")

    def _close_all(self, status: str) -> None:
        self._close_args(status)
        self._close_text(status)
        self._close_reasoning(status)
        for index, item in enumerate(self.output):
            if item.get("status") == "in_progress":  # an agent tool that never reported its result
                self._item_done(index, "incomplete")

    # --- the end ------------------------------------------------------------------------------------
    def _finish(self, event: RunCompleted | RunFailed, status: str) -> None:
        self.finished = True
        self.response["status"] = status
        self.response["completed_at"] = int(event.ts.timestamp()) if status == "completed" else None
        self.response["usage"] = response_usage(event.usage)

    def _completed(self, event: RunCompleted) -> None:
        incomplete = event.finish_reason in ("length", "content_filter")
        self._close_all("incomplete" if incomplete else "completed")
        if incomplete:
            reason = "max_output_tokens" if event.finish_reason == "length" else "content_filter"
            self._finish(event, "incomplete")
            self.response["incomplete_details"] = {"reason": reason}
            self._lifecycle("response.incomplete")
        else:
            self._finish(event, "completed")
            self._lifecycle("response.completed")

    def _failed(self, event: RunFailed) -> None:
        self._close_all("incomplete")
        info = event.error
        if info.code == "cancelled":
            self._finish(event, "cancelled")
        else:
            self._finish(event, "failed")
            self.response["error"] = response_error(info)
            # The SDK raises on a data frame carrying "error": the event says what failed, in both shapes.
            self._emit(
                {
                    "type": "error",
                    "code": info.code or info.type,
                    "message": info.message,
                    "param": info.param,
                    "error": {"type": info.type, "code": info.code, "message": info.message, "param": info.param},
                },
            )
        self._lifecycle("response.failed")

    # --- views --------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The ``Response`` as it stands (a copy)."""
        self._sync_text()
        return json_copy(self.response)  # type: ignore[no-any-return]
