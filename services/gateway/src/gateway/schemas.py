"""The request bodies the OpenAI routes accept (a subset of OpenAI's ``CreateChatCompletionRequest``).

Fields OpenAI defines that we do not serve (``n`` > 1, ``logprobs``, ``audio`` …: :data:`UNSERVED`) are
a 400 naming the field; fields nobody defines are ignored, as OpenAI does. Types are strict where
OpenAI's are (``"stream": "yes"`` is a 400, not ``True``). Framework-free: the route turns a
:class:`pydantic.ValidationError` into the 400 envelope. ``docs/api-chat.md`` tables every field.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
)

from contracts import ChatMessage, FunctionCall, ToolCall
from contracts.bounds import json_problem, text_problem
from contracts.problems import shown_key
from contracts.runs import ClientTool, FunctionDefinition, NamedToolChoice

Role = Literal["system", "developer", "user", "assistant", "tool"]
Number = StrictInt | StrictFloat

#: Integers the wire, the ledger and provider APIs all hold (int32).
MAX_INT32 = 2**31 - 1
#: Identifiers that reach a database column (a usage record's conversation id: 200 characters).
MAX_ID_LENGTH = 200
#: Names and short values (agent ids, users, tool names, stop sequences).
MAX_NAME_LENGTH = 256
#: Client functions a request may offer (OpenAI's own limit).
MAX_CLIENT_TOOLS = 128
#: A function's description, in characters.
MAX_TOOL_DESCRIPTION = 16_384
#: A JSON schema (a function's ``parameters``, a ``response_format`` schema), encoded, and its depth.
MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32
#: All the client's functions together, encoded.
MAX_TOOLS_BYTES = 512 * 1024
#: Function and schema names (OpenAI's rule).
FUNCTION_NAME = r"^[a-zA-Z0-9_-]{1,64}$"
#: ``fullmatch``: with ``match``, ``$`` also matches before a trailing newline ("f\n" would pass).
IS_FUNCTION_NAME = re.compile(FUNCTION_NAME).fullmatch


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


def _schema(value: dict[str, Any]) -> dict[str, Any]:
    # A schema travels to the provider as JSON: it must encode, stay small and shallow.
    found = json_problem(value, max_depth=MAX_SCHEMA_DEPTH)
    if found is not None:
        where = "".join(f"[{shown_key(p)!r}]" if isinstance(p, str) else f"[{p}]" for p in found[0])
        raise ValueError(f"{found[1]} (at {where or 'the top'})")
    if len(orjson.dumps(value)) > MAX_SCHEMA_BYTES:
        raise ValueError(f"must be at most {MAX_SCHEMA_BYTES} bytes of JSON")
    return value


#: A JSON object passed on as it is (a JSON schema, a provider's ``extra_content``), bounded (see :func:`_schema`).
Schema = Annotated[dict[str, Any], AfterValidator(_schema)]


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
    #: What the provider attached to the call (Gemini's thought signature), as the response gave it.
    extra_content: Schema | None = None


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
                ToolCall(
                    id=t.id,
                    function=FunctionCall(name=t.function.name, arguments=t.function.arguments),
                    extra_content=t.extra_content,
                )
                for t in self.tool_calls
            ]
            if self.tool_calls
            else None
        )
        return ChatMessage(
            role=self.role, content=content, name=self.name, tool_calls=tool_calls, tool_call_id=self.tool_call_id
        )


def _served_tool_choice(value: Any) -> Any:
    """A ``tool_choice`` object of another type than a function's (``allowed_tools``, ``custom``, a
    hosted tool) is refused by name, not as every member of the union it fails."""
    kind = value.get("type") if isinstance(value, dict) else None
    if kind is not None and kind != "function":
        shown = shown_key(kind) if isinstance(kind, str) else "…"
        raise ValueError(
            f"a tool_choice of type {shown!r} is not served: send 'auto', 'none', 'required' or a function"
        )
    return value


#: What a ``tool_choice`` field checks first (:func:`_served_tool_choice`).
ServedToolChoice = BeforeValidator(_served_tool_choice)
FunctionName = Annotated[StrictStr, Field(pattern=FUNCTION_NAME)]


def _object_schema(value: dict[str, Any]) -> dict[str, Any]:
    # What providers take as a function's arguments: an object (Anthropic's input_schema must be one).
    if "type" in value and value["type"] != "object":
        raise ValueError(f"must be a JSON schema of type 'object', not {value['type']!r}")
    return value


class FunctionIn(_Body):
    name: FunctionName
    description: Annotated[Text, Field(max_length=MAX_TOOL_DESCRIPTION)] | None = None
    parameters: Annotated[Schema, AfterValidator(_object_schema)] | None = None
    strict: StrictBool | None = None


class ToolIn(_Body):
    """A client function (``type: "function"``); other tool types (``custom``) are a 400."""

    type: Literal["function"]
    function: FunctionIn

    def to_contract(self) -> ClientTool:
        f = self.function
        # An empty schema is "no parameters": the runner sends a valid empty object schema.
        parameters = f.parameters or None
        return ClientTool(
            function=FunctionDefinition(name=f.name, description=f.description, parameters=parameters, strict=f.strict)
        )


class NamedFunction(_Body):
    name: FunctionName


class NamedChoiceIn(_Body):
    type: Literal["function"]
    function: NamedFunction


class JSONSchemaIn(_Body):
    name: FunctionName
    description: Annotated[Text, Field(max_length=MAX_TOOL_DESCRIPTION)] | None = None
    schema_: Schema | None = Field(default=None, validation_alias=AliasChoices("schema"))
    strict: StrictBool | None = None


class ResponseFormat(_Body):
    """``text`` (the default), ``json_object``, or ``json_schema`` with its schema. One model rather
    than a tagged union, so an error's ``param`` is the field's path (no tag in it); a ``json_schema``
    without its schema is refused by :meth:`ChatCompletionRequest.problem`."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaIn | None = None


#: Fields OpenAI defines that an agent run does not serve, and why (a 400 naming the field unless the
#: value asks for nothing: ``null``, and the neutral values of :data:`NEUTRAL`).
UNSERVED: dict[str, str] = {
    "logprobs": "log probabilities are not served",
    "top_logprobs": "log probabilities are not served",
    "audio": "audio output is not served",
    "prediction": "predicted outputs are not served",
    "web_search_options": "web search is not served on this route",
    "functions": "the deprecated 'functions' is not served; send 'tools'",
    "function_call": "the deprecated 'function_call' is not served; send 'tool_choice'",
    "frequency_penalty": "sampling is the agent's: set it in its model_parameters",
    "presence_penalty": "sampling is the agent's: set it in its model_parameters",
    "logit_bias": "logit bias is not served",
    "reasoning_effort": "reasoning effort is the agent's: set it in its model_parameters",
    "verbosity": "verbosity is the agent's: set it in its model_parameters",
}
#: Values of unserved fields that ask for nothing, so clients that send them by habit still work.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "top_logprobs": (0,),
    "logit_bias": ({},),
    "modalities": (["text"],),
    # OpenAI's defaults, which some UIs send every time.
    "frequency_penalty": (0,),
    "presence_penalty": (0,),
}


def _neutral(name: str, value: Any) -> bool:
    """Whether ``value`` of the unserved field ``name`` asks for nothing (``0`` and ``0.0`` alike, but
    ``false`` is not the number ``0``, nor ``0`` the boolean ``false``)."""
    return any(value == n and isinstance(value, bool) == isinstance(n, bool) for n in NEUTRAL.get(name, ()))


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
    tools: Annotated[list[ToolIn], Field(max_length=MAX_CLIENT_TOOLS)] | None = None
    tool_choice: Annotated[Literal["auto", "none", "required"] | NamedChoiceIn | None, ServedToolChoice] = None
    parallel_tool_calls: StrictBool | None = None
    response_format: ResponseFormat | None = None
    modalities: list[Name] | None = None
    #: The raw values of :data:`UNSERVED` fields, kept only to be refused by name.
    logprobs: Any = None
    top_logprobs: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None
    functions: Any = None
    function_call: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None

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
        """``(param, message)`` for the first field that is well-typed but not servable: an unserved
        field, a message its role makes invalid, client tools that contradict each other."""
        unserved = self.unserved()
        if unserved is not None:
            return unserved
        if self.stream_options is not None and not self.stream:  # as OpenAI answers it
            return "stream_options", "it is only allowed when 'stream' is true"
        for i, message in enumerate(self.messages):
            found = message.problem()
            if found is not None:
                return f"messages[{i}].{found[0]}", found[1]
        return self.history_problem() or self.tools_problem()

    def history_problem(self) -> tuple[str, str] | None:
        """Tool calls and their answers that do not pair up, as every provider refuses them: each
        ``tool`` message answers a call of the assistant message before it, and each such call is
        answered before the conversation goes on."""
        open_calls: set[str] = set()  # calls of the last assistant message not answered yet
        opened_at = -1
        for i, message in enumerate(self.messages):
            if message.role == "tool":
                if message.tool_call_id not in open_calls:
                    return (
                        f"messages[{i}].tool_call_id",
                        f"{message.tool_call_id!r} answers no tool call of the assistant message before it",
                    )
                open_calls.discard(message.tool_call_id)
                continue
            if open_calls:
                return f"messages[{opened_at}].tool_calls", "every tool call needs a 'tool' message answering it"
            if message.role == "assistant" and message.tool_calls:
                open_calls = {c.id for c in message.tool_calls}
                opened_at = i
        if open_calls:
            return f"messages[{opened_at}].tool_calls", "every tool call needs a 'tool' message answering it"
        return None

    def unserved(self) -> tuple[str, str] | None:
        for name, why in UNSERVED.items():
            value = getattr(self, name)
            if value is not None and not _neutral(name, value):
                return name, f"not supported: {why}"
        if self.modalities is not None and any(m != "text" for m in self.modalities):
            return "modalities", "not supported: only 'text' output is served"
        fmt = self.response_format
        if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
            return "response_format.json_schema", "a 'json_schema' response format needs 'json_schema'"
        return None

    def tools_problem(self) -> tuple[str, str] | None:
        """Duplicate function names, a choice naming no function, the functions' size in all."""
        names: set[str] = set()
        for i, tool in enumerate(self.tools or ()):
            if tool.function.name in names:
                return f"tools[{i}].function.name", f"duplicate function name {tool.function.name!r}"
            names.add(tool.function.name)
        if self.tools and sum(len(t.model_dump_json()) for t in self.tools) > MAX_TOOLS_BYTES:
            return "tools", f"the functions must be at most {MAX_TOOLS_BYTES} bytes of JSON in all"
        choice = self.tool_choice
        if isinstance(choice, NamedChoiceIn) and choice.function.name not in names:
            return "tool_choice", f"names the function {choice.function.name!r}, which 'tools' does not define"
        if choice == "required" and not names:
            return "tool_choice", "'required' needs functions in 'tools'"
        return None

    def collision(self, agent_tools: list[str]) -> tuple[str, str] | None:
        """A client function named like one of the agent's own tools (``param``, message), or ``None``."""
        own = set(agent_tools)
        for i, tool in enumerate(self.tools or ()):
            if tool.function.name in own:
                return (
                    f"tools[{i}].function.name",
                    f"{tool.function.name!r} is the name of one of the agent's own tools; rename your function",
                )
        return None

    def client_tools(self) -> list[ClientTool] | None:
        return [t.to_contract() for t in self.tools] if self.tools else None

    def named_choice(self) -> Literal["auto", "none", "required"] | NamedToolChoice | None:
        choice = self.tool_choice
        if isinstance(choice, NamedChoiceIn):
            return NamedToolChoice(function=FunctionCall(name=choice.function.name))
        return choice

    def response_format_dict(self) -> dict[str, Any] | None:
        """``response_format`` as it goes to the model (``text`` is the default: nothing to send)."""
        fmt = self.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.json_schema is not None and fmt.type == "json_schema":
            schema = fmt.json_schema.model_dump(exclude_none=True, by_alias=False)
            if "schema_" in schema:
                schema["schema"] = schema.pop("schema_")
            return {"type": "json_schema", "json_schema": schema}
        return {"type": fmt.type}
