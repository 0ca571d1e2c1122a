"""The request bodies the OpenAI routes accept (a subset of OpenAI's ``CreateChatCompletionRequest``).

Unknown fields are ignored. Types are strict where OpenAI's are (``"stream": "yes"`` is a 400, not
``True``). Framework-free: the route turns a :class:`pydantic.ValidationError` into the 400 envelope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

from contracts import ChatMessage, FunctionCall, ToolCall

Role = Literal["system", "developer", "user", "assistant", "tool"]
Number = StrictInt | StrictFloat


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ContentPart(_Body):
    """One part of a message's content; text parts carry ``text``, other kinds pass through to the runner."""

    model_config = ConfigDict(extra="allow")

    type: StrictStr
    text: StrictStr | None = None


class FunctionCallIn(_Body):
    name: StrictStr
    arguments: StrictStr = ""


class ToolCallIn(_Body):
    id: StrictStr
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Body):
    role: Role
    content: StrictStr | list[ContentPart] | None = None
    name: StrictStr | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: StrictStr | None = None

    def problem(self) -> tuple[str, str] | None:
        """``(field, message)`` when the message is well-typed but incomplete for its role."""
        if self.role == "tool" and not self.tool_call_id:
            return "tool_call_id", "a 'tool' message needs 'tool_call_id'"
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            return "content", f"a '{self.role}' message needs 'content'"
        if isinstance(self.content, list):
            for part in self.content:
                if part.type == "text" and part.text is None:
                    return "content", "a text content part needs 'text'"
        return None

    def to_contract(self) -> ChatMessage:
        content: str | list[dict[str, Any]] | None
        if isinstance(self.content, list):
            content = [p.model_dump(exclude_none=True) for p in self.content]
        else:
            content = self.content
        tool_calls = (
            [
                ToolCall(id=t.id, function=FunctionCall(name=t.function.name, arguments=t.function.arguments))
                for t in self.tool_calls
            ]
            if self.tool_calls
            else None
        )
        return ChatMessage(
            role=self.role, content=content, name=self.name, tool_calls=tool_calls, tool_call_id=self.tool_call_id
        )


class StreamOptions(_Body):
    include_usage: StrictBool | None = None


class ChatCompletionRequest(_Body):
    """``POST /v1/chat/completions``: ``model`` names the agent."""

    model: Annotated[StrictStr, Field(min_length=1)]
    messages: Annotated[list[MessageIn], Field(min_length=1)]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    user: StrictStr | None = None
    conversation_id: StrictStr | None = None
    parent_message_id: StrictStr | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def stop_list(self) -> list[str] | None:
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    def problem(self) -> tuple[str, str] | None:
        """``(param, message)`` for the first message that its role makes invalid."""
        for i, message in enumerate(self.messages):
            found = message.problem()
            if found is not None:
                return f"messages[{i}].{found[0]}", found[1]
        return None


def estimate_prompt_tokens(messages: list[ChatMessage], instructions: str | None) -> int:
    """A cheap prompt-size estimate for admission: characters / 4 of every message's text and the instructions."""
    chars = len(instructions or "")
    for m in messages:
        chars += len(m.text())
        if m.tool_calls:
            chars += sum(len(t.function.name) + len(t.function.arguments) for t in m.tool_calls)
    return (chars + 3) // 4
