"""``POST /v1/responses`` bodies: the subset of OpenAI's ``CreateResponse`` Switchboard serves.

Types are strict where OpenAI's are. What a client sends that Switchboard cannot honour is a 400 when
ignoring it would mislead the client (``conversation``, ``prompt`` templates, hosted tools such as
``web_search``, ``background`` without ``store``); fields that only tune OpenAI's own service are
accepted and ignored (:data:`IGNORED_FIELDS`, listed in ``docs/responses.md``). Framework-free.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from contracts import ClientTool, FunctionCall, FunctionDefinition, NamedToolChoice

from ..errors import GatewayError, describe_validation_error
from ..schemas import (
    IS_FUNCTION_NAME,
    MAX_CLIENT_TOOLS,
    MAX_INT32,
    MAX_NAME_LENGTH,
    MAX_TOOL_DESCRIPTION,
    MAX_TOOLS_BYTES,
    Ident,
    Name,
    Number,
    Schema,
    ServedToolChoice,
    Text,
)

#: Accepted and ignored: they tune OpenAI's service (caching, tiers, moderation, logprobs, truncation)
#: and change nothing a client relies on here.
IGNORED_FIELDS = (
    "include",
    "prompt_cache_key",
    "prompt_cache_retention",
    "prompt_cache_options",
    "safety_identifier",
    "service_tier",
    "stream_options",
    "top_logprobs",
    "truncation",
    "reasoning",
    "moderation",
    "context_management",
    "max_tool_calls",
)
#: Refused with a 400: honouring them is impossible here and ignoring them would mislead the client.
_REFUSED_FIELDS = {
    "conversation": "conversations are not supported; chain responses with 'previous_response_id'",
    "prompt": "prompt templates are not supported; send 'instructions' and 'input'",
}
#: Client functions a request may offer (chat's bound).
MAX_TOOLS = MAX_CLIENT_TOOLS
#: Metadata: at most 16 pairs, keys up to 64 characters, values up to 512 (OpenAI's limits).
_MAX_METADATA = 16


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionToolIn(_Body):
    """A client function, in the Responses API's flat shape (bounded as chat's: :mod:`gateway.schemas`)."""

    type: Literal["function"]
    name: Name
    description: Annotated[Text, Field(max_length=MAX_TOOL_DESCRIPTION)] | None = None
    parameters: Schema | None = None
    strict: StrictBool | None = None


class NamedFunctionChoice(_Body):
    type: Literal["function"]
    name: Name


class TextFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    name: Name | None = None
    schema_: Schema | None = Field(default=None, alias="schema")
    description: Text | None = None
    strict: StrictBool | None = None


class TextConfig(_Body):
    format: TextFormat | None = None


class CreateResponseRequest(_Body):
    """``POST /v1/responses``: ``model`` names the agent; ``input`` is checked item by item in :mod:`.inputs`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: Annotated[Name, Field(min_length=1)]
    input: StrictStr | list[Any]
    instructions: Text | None = None
    max_output_tokens: Annotated[StrictInt, Field(ge=1, le=MAX_INT32)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    metadata: dict[Annotated[Text, Field(max_length=64)], Annotated[Text, Field(max_length=512)]] | None = None
    stream: StrictBool | None = None
    store: StrictBool | None = None
    background: StrictBool | None = None
    previous_response_id: Ident | None = None
    user: Name | None = None
    tools: Annotated[list[dict[str, Any]], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: Annotated[Literal["auto", "none", "required"] | NamedFunctionChoice | None, ServedToolChoice] = None
    parallel_tool_calls: StrictBool | None = None
    text: TextConfig | None = None
    include: list[StrictStr] | None = None

    @property
    def stored(self) -> bool:
        """``store`` defaults to true, as at OpenAI."""
        return self.store is not False


def _bad(message: str, param: str, code: str | None = None) -> GatewayError:
    return GatewayError.bad_request(message, param, code)


def parse_create_request(raw: bytes) -> CreateResponseRequest:
    """Validate a ``POST /v1/responses`` body; 400 ``invalid_request_error`` naming the parameter otherwise."""
    if not raw.strip():
        raise GatewayError.bad_request("The request body is empty; send a JSON object.")
    try:
        body = CreateResponseRequest.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0].get("type") == "model_type" and not errors[0].get("loc"):
            raise GatewayError.bad_request("The request body must be a JSON object.") from None
        if errors and tuple(errors[0].get("loc") or ())[:1] == ("input",) and errors[0].get("type") != "missing":
            raise _bad("Invalid type for 'input': expected a string or an array of input items.", "input") from None
        message, param = describe_validation_error(errors)
        raise GatewayError.bad_request(message, param) from None
    extra = body.model_extra or {}
    for name, why in _REFUSED_FIELDS.items():
        if extra.get(name) is not None:
            raise _bad(f"Unsupported parameter: '{name}': {why}.", name, "unsupported_parameter")
    truncation = extra.get("truncation")
    if truncation is not None and truncation not in ("auto", "disabled"):
        raise _bad("Invalid value for 'truncation': one of 'auto' or 'disabled'.", "truncation")
    if body.background and not body.stored:
        raise _bad("'background' requires 'store': a background response is read back later.", "background")
    if body.metadata is not None and len(body.metadata) > _MAX_METADATA:
        raise _bad(f"'metadata' holds at most {_MAX_METADATA} pairs.", "metadata")
    if isinstance(body.input, list) and not body.input:
        raise _bad("'input' must hold at least one item.", "input")
    return body


def client_tools(body: CreateResponseRequest) -> list[ClientTool] | None:
    """The request's function tools as the run carries them; 400 naming the first bad one."""
    if not body.tools:
        return None
    tools: list[ClientTool] = []
    seen: set[str] = set()
    for i, raw in enumerate(body.tools):
        param = f"tools[{i}]"
        kind = raw.get("type")
        if kind != "function":
            raise _bad(
                f"Unsupported tool type {kind!r} in '{param}': only 'function' tools are supported; "
                "the agent's own tools run on the server.",
                f"{param}.type",
                "unsupported_parameter",
            )
        try:
            tool = FunctionToolIn.model_validate(raw)
        except ValidationError as exc:
            message, sub = describe_validation_error(exc.errors(include_url=False))
            raise _bad(message, f"{param}.{sub}" if sub else param) from None
        if not IS_FUNCTION_NAME(tool.name):
            raise _bad(
                f"Invalid 'name' in '{param}': a function name is 1 to 64 letters, digits, '_' or '-'.",
                f"{param}.name",
            )
        if tool.name in seen:
            raise _bad(f"Duplicate function name {tool.name!r} in 'tools'.", f"{param}.name")
        seen.add(tool.name)
        if tool.parameters is not None and tool.parameters.get("type", "object") != "object":
            raise _bad(
                f"Invalid 'parameters' in '{param}': a function's parameters are a JSON Schema of type 'object'.",
                f"{param}.parameters",
            )
        tools.append(
            ClientTool(
                function=FunctionDefinition(
                    # An empty schema is "no parameters": the runner sends a valid empty object schema.
                    name=tool.name,
                    description=tool.description,
                    parameters=tool.parameters or None,
                    strict=tool.strict,
                )
            )
        )
    if sum(len(t.model_dump_json()) for t in tools) > MAX_TOOLS_BYTES:
        raise _bad(f"The functions in 'tools' must be at most {MAX_TOOLS_BYTES} bytes of JSON in all.", "tools")
    return tools


def check_tool_names(tools: list[ClientTool] | None, agent_tools: list[str]) -> None:
    """A client function may not be named like one of the agent's own tools (the model could not tell
    them apart): 400 ``tool_name_conflict``, as on chat."""
    own = set(agent_tools)
    for i, tool in enumerate(tools or ()):
        if tool.function.name in own:
            raise _bad(
                f"Invalid value for 'tools[{i}].name': {tool.function.name!r} is the name of one of the agent's "
                "own tools; rename your function.",
                f"tools[{i}].name",
                "tool_name_conflict",
            )


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice | None


def tool_choice(body: CreateResponseRequest, tools: list[ClientTool] | None) -> ToolChoice:
    """``tool_choice`` as the run carries it; a named function must be one of ``tools``."""
    choice = body.tool_choice
    if choice is None or isinstance(choice, str):
        if choice == "required" and not tools:
            raise _bad("'tool_choice' is 'required' but no function was offered in 'tools'.", "tool_choice")
        return choice
    names = {t.function.name for t in tools or []}
    if choice.name not in names:
        raise _bad(f"'tool_choice' names {choice.name!r}, which is not a function in 'tools'.", "tool_choice.name")
    return NamedToolChoice(function=FunctionCall(name=choice.name))


def response_format(body: CreateResponseRequest) -> dict[str, Any] | None:
    """``text.format`` as the chat API's ``response_format`` (what the run carries)."""
    fmt = body.text.format if body.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {"type": "json_object"}
    if not fmt.name or fmt.schema_ is None:
        raise _bad("A 'json_schema' text format needs 'name' and 'schema'.", "text.format")
    schema: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    if fmt.description:
        schema["description"] = fmt.description
    return {"type": "json_schema", "json_schema": schema}


def echoed_tools(tools: list[ClientTool] | None) -> list[dict[str, Any]]:
    """The ``tools`` of the Response body: the client's functions in the flat Responses shape."""
    return [
        {
            "type": "function",
            "name": t.function.name,
            "description": t.function.description,
            "parameters": t.function.parameters,
            "strict": t.function.strict,
        }
        for t in tools or []
    ]


def echoed_tool_choice(choice: str | NamedToolChoice | None) -> Any:
    if choice is None:
        return "auto"
    if isinstance(choice, str):
        return choice
    return {"type": "function", "name": choice.function.name}


__all__ = [
    "IGNORED_FIELDS",
    "MAX_NAME_LENGTH",
    "CreateResponseRequest",
    "check_tool_names",
    "client_tools",
    "echoed_tool_choice",
    "echoed_tools",
    "parse_create_request",
    "response_format",
    "tool_choice",
]
