"""What a runner reports about a run, in order: one subject per run, a sequence number per event.

The gateway relays these as SSE chunks (or aggregates them). ``seq`` starts at 0 on ``started`` and
goes up by one per event, heartbeats included, so the gateway detects a gap.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter
from pydantic_core import to_json

from ._base import Event, event_id
from .errors import ErrorInfo
from .usage import TokenUsage

FinishReason = Literal["stop", "length", "tool_calls", "content_filter"]


class _RunEvent(Event):
    run_id: str
    seq: int = Field(ge=0)


class RunStarted(_RunEvent):
    type: Literal["started"] = "started"
    runner_id: str = ""


class TextDelta(_RunEvent):
    """Text the model wrote: one token, or several that reached the runner together (the deltas of one
    read from the provider are joined; a call's first delta is always sent alone). The same holds for
    :class:`ReasoningDelta` and :class:`ToolCallArgumentsDelta`."""

    type: Literal["text_delta"] = "text_delta"
    delta: str


class ReasoningDelta(_RunEvent):
    type: Literal["reasoning_delta"] = "reasoning_delta"
    delta: str


class ToolCallStarted(_RunEvent):
    """A tool call begins. ``index`` is the call's place in the run's one tool-call index space.

    ``client`` false (the default): the agent's own tool (built-in or MCP), executed by the runner, whose
    ``tool_result`` follows; clients show it as agent activity, never as a call they must make.
    ``client`` true: a function the client supplied with the request; the runner does not execute it,
    and the run ends with ``finish_reason: "tool_calls"`` for the client to run it and send the result.
    ``server_label`` names where an agent tool runs: the MCP server's name, or ``switchboard`` for built-ins.
    """

    type: Literal["tool_call_started"] = "tool_call_started"
    index: int = Field(ge=0)
    call_id: str
    name: str
    client: bool = False
    server_label: str = "switchboard"
    extra_content: dict[str, Any] | None = Field(
        default=None,
        description="a client call's extra_content from the provider (Gemini's thought signature): the "
        "client gets it on the call and sends it back with the call in the conversation",
    )


class ToolCallArgumentsDelta(_RunEvent):
    type: Literal["tool_call_arguments_delta"] = "tool_call_arguments_delta"
    index: int = Field(ge=0)
    delta: str


class ToolResult(_RunEvent):
    """A server-side tool finished; an error is reported to the model as the result."""

    type: Literal["tool_result"] = "tool_result"
    index: int = Field(ge=0)
    call_id: str
    name: str
    output: str
    is_error: bool = False


class UsageReported(_RunEvent):
    """The usage of model call ``call_index``, exactly as recorded on the USAGE stream."""

    type: Literal["usage"] = "usage"
    call_index: int = Field(ge=0)
    usage: TokenUsage
    estimated: bool = False


class RunCompleted(_RunEvent):
    """The run ended normally. ``usage`` is the sum over every model call of the run."""

    type: Literal["completed"] = "completed"
    finish_reason: FinishReason = "stop"
    usage: TokenUsage = Field(default_factory=TokenUsage)


class RunFailed(_RunEvent):
    type: Literal["failed"] = "failed"
    error: ErrorInfo
    usage: TokenUsage = Field(default_factory=TokenUsage)
    detail: str | None = Field(
        default=None,
        description="the technical cause (the provider's own error) for the gateway's log; never shown to the client",
    )


class Heartbeat(_RunEvent):
    """Sent while a live run has nothing else to say, so the gateway's idle timeout does not fire."""

    type: Literal["heartbeat"] = "heartbeat"


RunEvent = Annotated[
    RunStarted
    | TextDelta
    | ReasoningDelta
    | ToolCallStarted
    | ToolCallArgumentsDelta
    | ToolResult
    | UsageReported
    | RunCompleted
    | RunFailed
    | Heartbeat,
    Field(discriminator="type"),
]

#: Decode a run event from its JSON bytes: ``RUN_EVENT.validate_json(data)``.
RUN_EVENT: TypeAdapter[RunEvent] = TypeAdapter(RunEvent)

TERMINAL_EVENT_TYPES = frozenset({"completed", "failed"})


class _UtcStamp:
    """``ts`` as the models write it (``2026-12-03T18:09:37.067336Z``), the date and time formatted once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((now - second) * 1_000_000):06d}Z"


_stamp = _UtcStamp()


class DeltaEncoder:
    """The JSON of a run's per-token events, as their models would write it, without building models.

    A stream sends one of these per token (or per read of tokens), so this is the runner's hottest
    path: a tenth of a model's cost. ``encode(TextDelta, seq, delta)`` equals
    ``TextDelta(run_id=…, seq=…, delta=…).model_dump_json()`` up to the event's own ``id`` and ``ts``
    (and likewise :class:`ReasoningDelta` and, with ``index``, :class:`ToolCallArgumentsDelta`;
    tests/unit/test_delta_encoder.py)."""

    def __init__(self, run_id: str) -> None:
        self._run_id = to_json(run_id).decode()

    def encode(
        self,
        event_type: type[TextDelta] | type[ReasoningDelta] | type[ToolCallArgumentsDelta],
        seq: int,
        delta: str,
        index: int | None = None,
    ) -> bytes:
        kind = _DELTA_TYPES[event_type]
        index_part = "" if index is None else f',"index":{index:d}'
        head = (
            f'{{"id":"{event_id()}","ts":"{_stamp()}","run_id":{self._run_id},"seq":{seq:d},"type":"{kind}"{index_part}'
        )
        return b"".join((head.encode(), b',"delta":', to_json(delta), b"}"))


_DELTA_TYPES: dict[type[_RunEvent], str] = {
    TextDelta: "text_delta",
    ReasoningDelta: "reasoning_delta",
    ToolCallArgumentsDelta: "tool_call_arguments_delta",
}
