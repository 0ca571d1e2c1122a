"""The request bodies the OpenAI routes accept (a subset of OpenAI's ``CreateChatCompletionRequest``).

Unknown fields are ignored. Types are strict where OpenAI's are (``"stream": "yes"`` is a 400, not
``True``). Framework-free: the route turns a :class:`pydantic.ValidationError` into the 400 envelope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from contracts import ChatMessage, FunctionCall, ToolCall
from contracts.bounds import text_problem

Role = Literal["system", "developer", "user", "assistant", "tool"]
Number = StrictInt | StrictFloat

#: Integers the wire, the ledger and provider APIs all hold (int32).
MAX_INT32 = 2**31 - 1
#: Identifiers that reach a database column (a usage record's conversation id: 200 characters).
MAX_ID_LENGTH = 200
#: Names and short values (agent ids, users, tool names, stop sequences).
MAX_NAME_LENGTH = 256


def _storable(value: str) -> str:
    # What PostgreSQL cannot store (NUL) is refused here, before it reaches NATS or a database.
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A string storage can hold (any length: the body limit and the run size bound it).
Text = Annotated[StrictStr, AfterValidator(_storable)]
#: An identifier stored with a run's usage.
Ident = Annotated[StrictStr, Field(max_length=MAX_ID_LENGTH), AfterValidator(_storable)]
#: A short name.
Name = Annotated[StrictStr, Field(max_length=MAX_NAME_LENGTH), AfterValidator(_storable)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"]
    text: Text


class RefusalPart(_Body):
    type: Literal["refusal"]
    refusal: Text


class ImageURL(_Body):
    url: Annotated[Text, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Body):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(_Body):
    data: Annotated[Text, Field(min_length=1)]
    format: Literal["wav", "mp3"]


class AudioPart(_Body):
    type: Literal["input_audio"]
    input_audio: InputAudio


#: One part of a message's content. ``file`` parts are refused: their size in tokens cannot be bounded
#: before the provider reads them, and admission must reserve a run's worst case.
ContentPart = Annotated[TextPart | RefusalPart | ImagePart | AudioPart, Field(discriminator="type")]


class FunctionCallIn(_Body):
    name: Name
    arguments: Text = ""


class ToolCallIn(_Body):
    id: Name
    type: Literal["function"] = "function"
    function: FunctionCallIn


class MessageIn(_Body):
    role: Role
    content: Text | list[ContentPart] | None = None
    name: Name | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: Name | None = None

    def problem(self) -> tuple[str, str] | None:
        """``(field, message)`` when the message is well-typed but incomplete for its role."""
        if self.role == "tool" and not self.tool_call_id:
            return "tool_call_id", "a 'tool' message needs 'tool_call_id'"
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            return "content", f"a '{self.role}' message needs 'content'"
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

    model: Annotated[Name, Field(min_length=1)]
    messages: Annotated[list[MessageIn], Field(min_length=1)]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_INT32)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_INT32)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    n: Literal[1] | None = Field(default=None, description="one choice a request: agents answer once")
    stop: Name | list[Name] | None = None
    user: Name | None = None
    conversation_id: Ident | None = None
    parent_message_id: Ident | None = None

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
