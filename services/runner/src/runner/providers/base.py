"""What a provider adapter is: one streamed model call in, a stream of neutral chunks out.

Adapters map the conversation (OpenAI chat shape, :class:`contracts.ChatMessage`) to their API and
its stream back to these chunks; the agent loop knows nothing of either SDK.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from contracts import ChatMessage, TokenUsage


@dataclass(frozen=True)
class ToolSpec:
    """A tool offered to the model: its name, description and JSON schema of arguments; ``strict``
    as the client set it on its own function (``None``: not said)."""

    name: str
    description: str
    parameters: dict[str, Any]
    strict: bool | None = None


@dataclass(frozen=True)
class ForcedTool:
    """A ``tool_choice`` that makes the model call this one tool."""

    name: str


#: Which tools the model may call: ``auto`` (its choice), ``none``, ``required`` (at least one of those
#: offered), or one named tool. ``None`` leaves the provider's default (``auto`` when tools are offered).
ToolChoice = Literal["auto", "none", "required"] | ForcedTool


@dataclass
class CallSpec:
    """One model call: the conversation so far (instructions first, as a system message)."""

    model: str
    messages: list[ChatMessage]
    tools: list[ToolSpec] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    #: Provider blocks to send back with the assistant message at that position of ``messages``
    #: (see :class:`OpaqueBlock`); adapters that have none ignore them.
    extras: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    tool_choice: ToolChoice | None = None
    #: ``False``: at most one tool call per model call (sent only when tools are offered).
    parallel_tool_calls: bool | None = None
    #: OpenAI's ``response_format`` as the client sent it (``json_object`` / ``json_schema``).
    response_format: dict[str, Any] | None = None


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class ReasoningChunk:
    text: str


@dataclass(frozen=True)
class ToolCallChunk:
    """Part of a tool call; ``index`` counts the call's tool calls from 0. The first chunk of a call
    carries ``id`` and ``name``.

    Not every OpenAI-compatible server numbers its calls: Gemini's leaves ``index`` out (``None``
    here) or sends every call at index 0, each whole in one chunk with its own ``id`` (see
    :func:`runner.agent.call_of`). ``extra_content`` is what the provider attached to the call and
    wants back on it in the conversation it is sent next (Gemini's, with its thought signature).
    """

    index: int | None
    arguments: str = ""
    id: str | None = None
    name: str | None = None
    extra_content: dict[str, Any] | None = None


@dataclass(frozen=True)
class UsageChunk:
    """The provider's own (normalised) usage of the call; may come in parts (Anthropic)."""

    usage: TokenUsage


@dataclass(frozen=True)
class FinishChunk:
    """Why the model stopped, as an OpenAI finish reason ("stop", "length", "tool_calls" …); ``raw`` is
    the provider's own word for it when that differs (Anthropic's ``end_turn``, ``tool_use`` …)."""

    reason: str
    raw: str | None = None

    @property
    def provider_reason(self) -> str:
        """The reason as the provider sent it (what the call's trace span reports)."""
        return self.raw or self.reason


@dataclass(frozen=True)
class ResponseInfo:
    """Who answered: the provider's id of its response and the model it names (sent once per call,
    from the stream's first event; either may be ``None`` when the provider leaves it out)."""

    id: str | None
    model: str | None


@dataclass(frozen=True)
class OpaqueBlock:
    """A block of the assistant's turn that the provider needs back, verbatim, in the next calls of the
    run (Anthropic's signed ``thinking`` blocks must precede the tool results they led to)."""

    block: dict[str, Any]


@dataclass(frozen=True)
class Pause:
    """The adapter has handled everything it had and now waits for the network: the chunks it yielded
    since the previous pause arrived together. Yielded only by adapters that can tell (they say so
    with a true ``marks_pauses``); the agent loop then sends the deltas that arrived together as one
    event instead of one event each (a fast model's burst, or a runner catching up under load)."""


#: The one :class:`Pause`.
PAUSE = Pause()

Chunk = TextChunk | ReasoningChunk | ToolCallChunk | UsageChunk | FinishChunk | OpaqueBlock | ResponseInfo | Pause


class Provider(Protocol):
    """A connection's adapter. :meth:`stream` raises :class:`runner.errors.ProviderError` when the
    call fails before any output and :class:`runner.errors.StreamBroken` when it breaks later. Cancelling
    the consuming task closes the HTTP request.

    An adapter whose stream yields :data:`PAUSE` whenever it is about to wait for the network also has
    a class attribute ``marks_pauses = True`` (read with ``getattr``: adapters without it send every
    delta on its own)."""

    kind: str

    def stream(self, call: CallSpec) -> AsyncGenerator[Chunk, None]: ...

    async def close(self) -> None: ...
