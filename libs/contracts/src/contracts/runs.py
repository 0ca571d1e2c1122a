"""What the gateway asks a runner to do: :class:`RunRequest` on the RUNS work queue, :class:`CancelRun`."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from ._base import Event, Message

Role = Literal["system", "developer", "user", "assistant", "tool"]


class FunctionCall(Message):
    name: str
    arguments: str = ""


class ToolCall(Message):
    """A tool call in a conversation's history (OpenAI chat shape)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall
    extra_content: dict[str, Any] | None = Field(
        default=None,
        description="what an OpenAI-compatible provider attached to the call and wants back on it "
        "(Gemini's thought signature); sent back to that provider only",
    )


class ChatMessage(Message):
    """One message of the conversation, in the OpenAI chat shape.

    ``content`` is a string or a list of OpenAI content parts (``{"type": "text", "text": …}``).
    """

    role: Role
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The message's text: a string content, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if not self.content:
            return ""
        return "".join(
            str(p.get("text", "")) for p in self.content if p.get("type") in ("text", "input_text", "output_text")
        )


class AgentSnapshot(Message):
    """The agent as it was when the run was admitted; the runner needs nothing else from the catalog."""

    id: str
    name: str
    description: str | None = None
    provider: str = Field(description="the name of a provider connection in the runner's configuration")
    model: str
    instructions: str | None = None
    model_parameters: dict[str, Any] = Field(default_factory=dict)
    tools: list[str] = Field(default_factory=list)
    owner_id: str | None = None
    created_at: datetime | None = None


class Caller(Message):
    """Who the run is for: the key's owner."""

    user_id: str
    key_id: str | None = None


class FunctionDefinition(Message):
    """A function the client offers the model (OpenAI's ``FunctionObject``), checked at the gateway."""

    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ClientTool(Message):
    """A tool the client supplied with the request: the model may call it, the client runs it."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedToolChoice(Message):
    """``tool_choice`` forcing one client function: ``{"type": "function", "function": {"name": …}}``."""

    type: Literal["function"] = "function"
    function: FunctionCall


class RunOptions(Message):
    """Per-request overrides of the agent's model parameters, as the client sent them."""

    stream: bool = True
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    max_steps: int | None = Field(default=None, ge=1, description="model calls at most in this run")
    tools: list[ClientTool] | None = Field(
        default=None, description="the client's own functions, offered to the model beside the agent's tools"
    )
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = Field(
        default=None, description="OpenAI's `response_format` (`json_object` or `json_schema`), as sent"
    )


class RunRequest(Event):
    """Run an agent. Published to RUNS with ``Nats-Msg-Id = run_id``; a runner acks it when it starts."""

    run_id: str
    api: Literal["chat.completions", "responses"] = "chat.completions"
    caller: Caller
    agent: AgentSnapshot
    messages: list[ChatMessage]
    options: RunOptions = Field(default_factory=RunOptions)
    deadline: datetime = Field(description="a runner that pulls the request after this drops it with `failed`")
    reservation_id: str | None = None
    await_admission: bool = Field(
        default=False,
        description="published while billing is still admitting the run: the runner calls no model before a "
        "RunAdmitted for it arrives, and drops it on a CancelRun",
    )
    conversation_id: str | None = None
    parent_message_id: str | None = None
    request_id: str | None = Field(
        default=None,
        description="the HTTP request that started the run (the gateway's `x-request-id`), for the runner's logs",
    )
    gateway_id: str | None = Field(
        default=None,
        max_length=128,
        description="the gateway whose client waits for the run: when that gateway's heartbeats "
        "(GatewayHeartbeat) stop, the runner cancels the run (billed for what it did). None when no "
        "client waits on one gateway (a background response, or a request with an Idempotency-Key, which "
        "a retry may pick up on another gateway): the run then goes on to its end",
    )


class CancelRun(Event):
    """Stop a run now (the client went away; the client cancelled a background response; or, for a run
    published before its admission, billing refused it). Core NATS, best effort."""

    run_id: str
    reason: Literal["client_disconnected", "deadline", "admin", "not_admitted", "client_cancelled"] = (
        "client_disconnected"
    )


class RunAdmitted(Event):
    """The go-ahead for a run published with ``await_admission``: billing admitted it (reserving under
    ``reservation_id``; none when balances are off). Core NATS, published by billing as it answers the
    admission (``AdmitRequest.announce``)."""

    run_id: str
    reservation_id: str | None = None
