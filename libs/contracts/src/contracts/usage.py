"""Metered spend: one record per model call, produced by the runner and consumed by billing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ._base import Event, Message


class TokenUsage(Message):
    """One model call's tokens, normalised across providers.

    ``input_tokens`` excludes cached tokens: the prompt is ``input_tokens + cache_write_tokens +
    cache_read_tokens``. ``reasoning_tokens`` is part of ``output_tokens``.
    """

    input_tokens: int = Field(default=0, ge=0)
    cache_write_tokens: int = Field(default=0, ge=0)
    cache_read_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    reasoning_tokens: int = Field(default=0, ge=0)

    @property
    def prompt_tokens(self) -> int:
        return self.input_tokens + self.cache_write_tokens + self.cache_read_tokens

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            input_tokens=self.input_tokens + other.input_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            reasoning_tokens=self.reasoning_tokens + other.reasoning_tokens,
        )


#: Why a call's usage is what it is: a normal call, a call cut short (client went away, run
#: cancelled, runner stopping), or a call that failed part-way.
UsageContext = Literal["normal", "cancelled", "incomplete"]


class UsageRecorded(Event):
    """The usage of one model call. Published to the USAGE stream with ``Nats-Msg-Id = {run_id}:{call_index}``.

    ``estimated`` is true when the provider never sent its final usage (the call was aborted or failed)
    and the runner counted the tokens itself.
    """

    run_id: str
    call_index: int = Field(ge=0)
    user_id: str
    agent_id: str
    conversation_id: str | None = None
    reservation_id: str | None = None
    provider: Literal["openai", "anthropic"]
    connection: str = ""
    model: str
    usage: TokenUsage
    estimated: bool = False
    context: UsageContext = "normal"

    @property
    def msg_id(self) -> str:
        return f"{self.run_id}:{self.call_index}"


class RunClosed(Event):
    """A run will make no more model calls: billing settles its reservation once it has ``calls`` records.

    Published to the USAGE stream with ``Nats-Msg-Id = {run_id}:closed``.
    """

    run_id: str
    user_id: str
    reservation_id: str | None = None
    calls: int = Field(ge=0)
    status: Literal["completed", "failed", "cancelled"]

    @property
    def msg_id(self) -> str:
        return f"{self.run_id}:closed"
