"""Run events → OpenAI chat wire format: pre-rendered SSE chunks, and the aggregated ``chat.completion``.

Pure and framework-free. Every streamed chunk of a completion shares its id, created and model, so
the constant head and tail of a chunk are rendered once; a text delta then costs one ``orjson.dumps``
of the delta string and a few byte concatenations.

**Whose tool call it is.** ``tool_calls`` (in a delta and in the message) and ``finish_reason:
"tool_calls"`` mean one thing only: *the client must run these* — the functions the client supplied
(:attr:`ToolCallStarted.client`). Their ``index`` counts the client's calls alone (0, 1, …), whatever
place the run gave them. The agent's own tools, which the runner executes, are reported in the
extension field :data:`AGENT_TOOL_CALLS` (``agent_tool_calls``), which standard clients ignore:

* in a delta, a list of fragments keyed by ``index`` (the agent's calls counted 0, 1, … on their own):
  the first fragment of a call ``{"index", "id", "name", "server_label", "arguments": ""}``, then
  ``{"index", "arguments": <fragment>}``, and once it ran ``{"index", "output", "is_error"}`` — the
  same accumulation rule as ``tool_calls``, so the openai SDK's stream helpers accumulate it too;
* in the message, the whole calls in order: ``{"id", "name", "server_label", "arguments", "output",
  "is_error"}``.

**Steps.** A run may call the model several times (tool calls in between). The text of a model call
that follows an earlier one's text starts with :data:`STEP_SEPARATOR` (a blank line), so successive
steps never run together ("…let me compute that.\\n\\n17*23 = 391."); reasoning is separated the same way.
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
    ToolResult,
    UsageReported,
)

DONE = b"data: [DONE]\n\n"
#: A comment line, with no blank line after it: once a frame has carried an ``id:``, the openai SDK's
#: decoder turns any blank line into an event (an empty one, which it fails to parse as JSON). Alone
#: on its line, the comment is ignored by every SSE parser and still keeps the connection busy.
KEEP_ALIVE = b": keep-alive\n"
_FRAME_BREAK = b"\n\ndata: "
#: The extension field (of a delta and of a message) that carries the agent's own tool activity.
AGENT_TOOL_CALLS = "agent_tool_calls"
#: What starts the text (and the reasoning) of a model call when an earlier call of the run sent some.
STEP_SEPARATOR = "\n\n"
_SEPARATOR_JSON = orjson.dumps(STEP_SEPARATOR)[:-1]  # '"\n\n' without the closing quote


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


def with_id(seq: int, frames: bytes) -> bytes:
    """``frames`` (one or more ``data:`` frames of one run event) each led by an ``id:`` line: the
    event's ``seq``, which a client sends back as ``Last-Event-ID`` to resume after it. A frame's JSON
    never holds a raw newline (orjson escapes it), so a blank line followed by ``data:`` is a frame
    boundary."""
    tag = b"id: %d\n" % seq
    return tag + frames.replace(_FRAME_BREAK, b"\n\n" + tag + b"data: ")


def error_chunk(info: ErrorInfo) -> bytes:
    """The in-stream error: a data frame with a top-level ``error`` (the SDK raises ``APIError`` on it)."""
    return b"data: " + orjson.dumps(info.envelope()) + b"\n\n"


def final_finish_reason(reported: str, client_calls: int) -> str:
    """``tool_calls`` exactly when the client was handed calls to run; the run's own reason otherwise."""
    if client_calls:
        return "tool_calls"
    return "stop" if reported == "tool_calls" else reported


class _Steps:
    """Where the run is in its model calls and tool calls: the two index spaces and the step breaks.

    Shared by the streamed and the whole answer so both follow one rule."""

    __slots__ = ("agent", "client", "reasoning_break", "reasoning_sent", "text_break", "text_sent")

    def __init__(self) -> None:
        self.client: dict[int, int] = {}  # run index → the client's index
        self.agent: dict[int, int] = {}  # run index → the agent-activity index
        self.text_sent = self.text_break = False
        self.reasoning_sent = self.reasoning_break = False

    def call_ended(self) -> None:
        """A model call ended (its usage came): the next one's text and reasoning start a new step."""
        self.text_break = self.text_sent
        self.reasoning_break = self.reasoning_sent

    def start(self, event: ToolCallStarted) -> int:
        """The call's index in its own space (the client's, or the agent activity's)."""
        space = self.client if event.client else self.agent
        index = space[event.index] = len(space)
        return index


class ChunkRenderer:
    """Renders the SSE frames of one streamed chat completion."""

    __slots__ = (
        "_head",
        "_meta",
        "_open_tail",
        "_steps",
        "_usage_null",
        "completion_id",
        "created",
        "include_usage",
        "model",
    )

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
        self._steps = _Steps()

    def delta(self, delta_json: bytes) -> bytes:
        return self._head + delta_json + self._open_tail

    def role(self, calls_first: bool = False) -> bytes:
        """The stream's first chunk; ``content`` is null when the answer begins with the client's
        tool calls, as OpenAI's is (clients would otherwise keep an empty text part)."""
        return self.delta(
            b'{"role":"assistant","content":null}' if calls_first else b'{"role":"assistant","content":""}'
        )

    def text(self, text: str) -> bytes:
        steps = self._steps
        if steps.text_break:
            steps.text_break = False
            # The separator joins the delta's own JSON string: '"\n\n' + 'text"' without its quote.
            return self._head + b'{"content":' + _SEPARATOR_JSON + orjson.dumps(text)[1:] + b"}" + self._open_tail
        steps.text_sent = True
        return self._head + b'{"content":' + orjson.dumps(text) + b"}" + self._open_tail

    def reasoning(self, text: str) -> bytes:
        # OpenRouter's convention for reasoning in chat deltas; clients that don't know it ignore it.
        steps = self._steps
        steps.reasoning_sent = True
        if steps.reasoning_break:
            steps.reasoning_break = False
            text = STEP_SEPARATOR + text
        return self._head + b'{"reasoning":' + orjson.dumps(text) + b"}" + self._open_tail

    def tool_call_started(self, event: ToolCallStarted) -> bytes:
        index = self._steps.start(event)
        if event.client:
            call = {
                "index": index,
                "id": event.call_id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            if event.extra_content is not None:
                call["extra_content"] = event.extra_content
            return self.delta(orjson.dumps({"tool_calls": [call]}))
        activity = {
            "index": index,
            "id": event.call_id,
            "name": event.name,
            "server_label": event.server_label,
            "arguments": "",
        }
        return self.delta(orjson.dumps({AGENT_TOOL_CALLS: [activity]}))

    def tool_call_arguments(self, run_index: int, fragment: str) -> bytes | None:
        # Only index and the fragment: repeating id or name makes the SDK's accumulator double them.
        steps = self._steps
        index = steps.client.get(run_index)
        if index is not None:
            return self.delta(orjson.dumps({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
        index = steps.agent.get(run_index)
        if index is None:
            return None  # arguments of a call never started: nothing to attach them to
        return self.delta(orjson.dumps({AGENT_TOOL_CALLS: [{"index": index, "arguments": fragment}]}))

    def tool_result(self, event: ToolResult) -> bytes | None:
        index = self._steps.agent.get(event.index)
        if index is None:
            return None
        result = {"index": index, "output": event.output, "is_error": event.is_error}
        return self.delta(orjson.dumps({AGENT_TOOL_CALLS: [result]}))

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
        """The frame for a content event (text, reasoning, tool activity); ``None`` for events that send nothing."""
        kind = type(event)
        if kind is TextDelta:
            return self.text(event.delta)  # type: ignore[union-attr]
        if kind is ReasoningDelta:
            return self.reasoning(event.delta)  # type: ignore[union-attr]
        if kind is ToolCallArgumentsDelta:
            return self.tool_call_arguments(event.index, event.delta)  # type: ignore[union-attr]
        if kind is ToolCallStarted:
            return self.tool_call_started(event)  # type: ignore[arg-type]
        if kind is ToolResult:
            return self.tool_result(event)  # type: ignore[arg-type]
        if kind is UsageReported:
            self._steps.call_ended()
        return None

    def completed(self, event: RunCompleted) -> bytes:
        """The finish chunk, the usage chunk when asked for, and ``[DONE]``."""
        out = self.finish(final_finish_reason(event.finish_reason, len(self._steps.client)))
        if self.include_usage:
            out += self.usage(event.usage)
        return out + DONE


class CompletionAggregator:
    """Collects a run's events into one ``chat.completion`` (non-streaming answers)."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._steps = _Steps()
        self._client: list[dict[str, Any]] = []  # by the client's index
        self._agent: list[dict[str, Any]] = []  # by the agent-activity index

    def add(self, event: RunEvent) -> None:
        kind = type(event)
        steps = self._steps
        if kind is TextDelta:
            if steps.text_break:
                steps.text_break = False
                self._text.append(STEP_SEPARATOR)
            steps.text_sent = True
            self._text.append(event.delta)  # type: ignore[union-attr]
        elif kind is ReasoningDelta:
            if steps.reasoning_break:
                steps.reasoning_break = False
                self._reasoning.append(STEP_SEPARATOR)
            steps.reasoning_sent = True
            self._reasoning.append(event.delta)  # type: ignore[union-attr]
        elif kind is ToolCallStarted:
            assert isinstance(event, ToolCallStarted)
            steps.start(event)
            if event.client:
                self._client.append(
                    {"id": event.call_id, "name": event.name, "arguments": [], "extra_content": event.extra_content}
                )
            else:
                self._agent.append(
                    {
                        "id": event.call_id,
                        "name": event.name,
                        "server_label": event.server_label,
                        "arguments": [],
                        "output": None,
                        "is_error": False,
                    }
                )
        elif kind is ToolCallArgumentsDelta:
            assert isinstance(event, ToolCallArgumentsDelta)
            call = self._call(event.index)
            if call is not None:
                call["arguments"].append(event.delta)
        elif kind is ToolResult:
            assert isinstance(event, ToolResult)
            index = steps.agent.get(event.index)
            if index is not None:
                self._agent[index]["output"] = event.output
                self._agent[index]["is_error"] = event.is_error
        elif kind is UsageReported:
            steps.call_ended()

    def _call(self, run_index: int) -> dict[str, Any] | None:
        index = self._steps.client.get(run_index)
        if index is not None:
            return self._client[index]
        index = self._steps.agent.get(run_index)
        return self._agent[index] if index is not None else None

    def message(self) -> dict[str, Any]:
        text = "".join(self._text)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if (text or not self._client) else None,
            "refusal": None,
        }
        if self._reasoning:
            message["reasoning"] = "".join(self._reasoning)
        if self._client:
            message["tool_calls"] = [_client_call(c) for c in self._client]
        if self._agent:
            message[AGENT_TOOL_CALLS] = [{**c, "arguments": "".join(c["arguments"])} for c in self._agent]
        return message

    def completion(self, completion_id: str, created: int, model: str, done: RunCompleted) -> dict[str, Any]:
        finish_reason = final_finish_reason(done.finish_reason, len(self._client))
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": self.message(), "logprobs": None, "finish_reason": finish_reason}],
            "usage": usage_object(done.usage),
        }


def _client_call(c: dict[str, Any]) -> dict[str, Any]:
    """A client's call in a whole message; ``extra_content`` only when the provider attached one."""
    call = {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": "".join(c["arguments"])}}
    if c["extra_content"] is not None:
        call["extra_content"] = c["extra_content"]
    return call
