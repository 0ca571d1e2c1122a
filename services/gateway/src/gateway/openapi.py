"""The gateway's OpenAPI document (``/openapi.json``, browsable at ``/docs``), with the OpenAI routes.

``POST /v1/chat/completions`` is a plain Starlette route (it skips FastAPI's dependency resolution on
the hot path), so FastAPI's generator does not see it. :func:`document_openai_routes` wraps
``app.openapi`` to add its operation once: the request body is the schema of the route's own parser
(:class:`gateway.schemas.ChatCompletionRequest`), the answers use the component names of OpenAI's spec
(``CreateChatCompletionResponse``, ``CreateChatCompletionStreamResponse``, ``ErrorResponse``) with
the fields Switchboard sends. The route itself is untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from .responses.request import IGNORED_FIELDS, CreateResponseRequest
from .routes.chat import PATH as CHAT_PATH
from .routes.responses import PATH as RESPONSES_PATH
from .schemas import ChatCompletionRequest

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(model=name)}


_NULLABLE_STRING = {"anyOf": [{"type": "string"}, {"type": "null"}]}

_USAGE = {
    "type": "object",
    "description": "What the run was billed for (every model call of the agent loop, summed).",
    "properties": {
        "prompt_tokens": {"type": "integer"},
        "completion_tokens": {"type": "integer"},
        "total_tokens": {"type": "integer"},
        "prompt_tokens_details": {"type": "object"},
        "completion_tokens_details": {"type": "object"},
    },
    "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
}

_TOOL_CALL = {
    "type": "object",
    "properties": {
        "index": {"type": "integer"},
        "id": {"type": "string"},
        "type": {"type": "string", "enum": ["function"]},
        "function": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "arguments": {"type": "string"}},
        },
    },
}

_FINISH = {"type": "string", "enum": ["stop", "length", "tool_calls", "content_filter"]}

_COMPONENTS: dict[str, Any] = {
    "CompletionUsage": _USAGE,
    "ChatCompletionMessageToolCall": _TOOL_CALL,
    "CreateChatCompletionResponse": {
        "type": "object",
        "title": "CreateChatCompletionResponse",
        "description": "The agent's whole answer (`stream` false).",
        "properties": {
            "id": {"type": "string", "description": "the run id"},
            "object": {"type": "string", "enum": ["chat.completion"]},
            "created": {"type": "integer"},
            "model": {"type": "string", "description": "the agent id the request named"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "message": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string", "enum": ["assistant"]},
                                "content": _NULLABLE_STRING,
                                "refusal": _NULLABLE_STRING,
                                "tool_calls": {"type": "array", "items": _ref("ChatCompletionMessageToolCall")},
                            },
                            "required": ["role", "content"],
                        },
                        "logprobs": {"type": "null"},
                        "finish_reason": _FINISH,
                    },
                    "required": ["index", "message", "finish_reason"],
                },
            },
            "usage": _ref("CompletionUsage"),
        },
        "required": ["id", "object", "created", "model", "choices"],
    },
    "CreateChatCompletionStreamResponse": {
        "type": "object",
        "title": "CreateChatCompletionStreamResponse",
        "description": "One `data:` frame of the SSE stream (`stream` true); the stream ends with `data: [DONE]`. "
        "A failure after the stream started is a frame holding an `ErrorResponse` instead.",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["chat.completion.chunk"]},
            "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "delta": {
                            "type": "object",
                            "properties": {
                                "role": {"type": "string"},
                                "content": _NULLABLE_STRING,
                                "tool_calls": {"type": "array", "items": _ref("ChatCompletionMessageToolCall")},
                            },
                        },
                        "finish_reason": {"anyOf": [_FINISH, {"type": "null"}]},
                    },
                },
            },
            "usage": {
                "anyOf": [_ref("CompletionUsage"), {"type": "null"}],
                "description": "with `stream_options.include_usage`: null on every chunk but the last",
            },
        },
        "required": ["id", "object", "created", "model", "choices"],
    },
    "ErrorResponse": {
        "type": "object",
        "title": "ErrorResponse",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "written for the user"},
                    "type": {"type": "string"},
                    "param": _NULLABLE_STRING,
                    "code": _NULLABLE_STRING,
                },
                "required": ["message", "type"],
            }
        },
        "required": ["error"],
    },
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("ErrorResponse")}}}


_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "1-255 printable ASCII characters, scoped to the caller, kept 24 h: the same key with the same "
    "body never starts a second run or charge — a retry gets the same answer (a live stream is joined, a "
    "finished one replayed frame for frame); the same key with another body is a 422 "
    "(`idempotency_key_reused`). See docs/resume.md",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[ -~]+$"},
}
_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "with `Idempotency-Key` and `stream` true: the `id:` of the last frame received; the stream "
    "resumes after it (on any gateway) with exactly the frames that followed",
    "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
}
_IDEMPOTENCY_ERRORS = {
    "409": _error("The result of the request made with this `Idempotency-Key` is no longer kept, or still in progress"),
    "422": _error("This `Idempotency-Key` was used with another body (`idempotency_key_reused`)"),
}


def chat_operation() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI operation of ``POST /v1/chat/completions`` and the component schemas it refers to."""
    request = ChatCompletionRequest.model_json_schema(ref_template=_REF)
    components = dict(request.pop("$defs", {}))
    components["CreateChatCompletionRequest"] = request
    components.update(_COMPONENTS)
    operation = {
        "tags": ["openai"],
        "summary": "Create chat completion",
        "operationId": "createChatCompletion",
        "description": "Run an agent (`model` is the agent id, see `GET /v1/models`) on a conversation, as "
        "OpenAI's Chat Completions API: the agent's instructions, model and tools are applied, and the "
        "agent loop runs its tools before it answers. With `stream` true the answer is an SSE stream of "
        "`chat.completion.chunk` frames, each with an `id:` line (the run event's sequence number). "
        "Every response carries an `x-request-id` header (the client's "
        "`X-Request-ID` when it sent an acceptable one).",
        "security": [{"bearerAuth": []}],
        "parameters": [
            {
                "name": "X-Request-ID",
                "in": "header",
                "required": False,
                "description": "kept as the request id when 1-128 printable ASCII characters without spaces "
                "(any other value is replaced by an id of the gateway's own)",
                "schema": {"type": "string"},
            },
            _IDEMPOTENCY_KEY,
            _LAST_EVENT_ID,
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _ref("CreateChatCompletionRequest")}},
        },
        "responses": {
            "200": {
                "description": "The answer: one `chat.completion`, or (`stream` true) an SSE stream",
                "headers": {"x-request-id": {"schema": {"type": "string"}}},
                "content": {
                    "application/json": {"schema": _ref("CreateChatCompletionResponse")},
                    "text/event-stream": {"schema": _ref("CreateChatCompletionStreamResponse")},
                },
            },
            "400": _error("The request is invalid (`param` names the field)"),
            "401": _error("No or an unknown API key"),
            "402": _error("The balance is too low for this request"),
            "403": _error("The key's account may not use agents through the API"),
            "404": _error("No such agent, or the caller may not run it"),
            **_IDEMPOTENCY_ERRORS,
            "413": _error("The body or the conversation is too large"),
            "429": _error("Rate limited (see `Retry-After`)"),
            "502": _error("The model provider failed"),
            "503": _error("No runner, billing or queue available now (see `Retry-After`)"),
        },
    }
    return operation, components


_RESPONSE_COMPONENTS: dict[str, Any] = {
    "Response": {
        "type": "object",
        "title": "Response",
        "description": "OpenAI's `Response` object (see OpenAI's spec for every field): `id` is the response id "
        "everywhere (stream events, lookups, the ledger's run id); `output` holds `reasoning`, `message`, "
        "`mcp_call` (the agent's own tools, run on the server) and `function_call` (the client's functions) items.",
        "properties": {
            "id": {"type": "string"},
            "object": {"type": "string", "enum": ["response"]},
            "status": {
                "type": "string",
                "enum": ["completed", "failed", "in_progress", "cancelled", "queued", "incomplete"],
            },
            "model": {"type": "string", "description": "the agent id the request named"},
            "output": {"type": "array", "items": {"type": "object"}},
            "usage": {"type": "object", "description": "every model call of the run, summed: what was billed"},
        },
        "required": ["id", "object", "status", "model", "output"],
    },
    "ResponseStreamEvent": {
        "type": "object",
        "title": "ResponseStreamEvent",
        "description": "One SSE frame (`event: <type>` and `data: <json>`) of OpenAI's `ResponseStreamEvent` union; "
        "`sequence_number` rises from 0 without gaps. A failure after the stream started is an `error` event, "
        "then `response.failed`.",
        "properties": {"type": {"type": "string"}, "sequence_number": {"type": "integer"}},
        "required": ["type", "sequence_number"],
    },
}


def responses_operation() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI operation of ``POST /v1/responses`` and the component schemas it refers to."""
    request = CreateResponseRequest.model_json_schema(ref_template=_REF, by_alias=True)
    components = dict(request.pop("$defs", {}))
    components["CreateResponse"] = request
    components.update(_RESPONSE_COMPONENTS)
    operation = {
        "tags": ["openai"],
        "summary": "Create a response",
        "operationId": "createResponse",
        "description": "Run an agent (`model` is the agent id) as OpenAI's Responses API: `input` a string or "
        "items, `instructions` added to the agent's own, `previous_response_id` to continue a stored response, "
        "`store` (default true) to keep it, `background` to run it without a connected client (then "
        "`GET /v1/responses/{id}?stream=true&starting_after=N` reads its stream again on any gateway). "
        f"Accepted and ignored: {', '.join(f'`{f}`' for f in IGNORED_FIELDS)}.",
        "security": [{"bearerAuth": []}],
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CreateResponse")}}},
        "responses": {
            "200": {
                "description": "The `Response`, or (`stream` true) an SSE stream of its events",
                "headers": {"x-request-id": {"schema": {"type": "string"}}},
                "content": {
                    "application/json": {"schema": _ref("Response")},
                    "text/event-stream": {"schema": _ref("ResponseStreamEvent")},
                },
            },
            "400": _error("The request is invalid (`param` names the field)"),
            "401": _error("No or an unknown API key"),
            "402": _error("The balance is too low for this request"),
            "403": _error("The key's account may not use agents through the API"),
            "404": _error("No such agent (`model_not_found`), or no such previous response"),
            **_IDEMPOTENCY_ERRORS,
            "413": _error("The body or the conversation is too large"),
            "429": _error("Rate limited (see `Retry-After`)"),
            "502": _error("The model provider failed"),
            "503": _error("No runner, billing, queue or response store available now (see `Retry-After`)"),
        },
    }
    return operation, components


#: The error answers every route of the API may give besides its own (FastAPI's routes document none of them).
_COMMON_ERRORS: dict[str, dict[str, str]] = {
    "/v1/": {
        "400": "The request is invalid (`param` names the parameter)",
        "401": "No or an unknown API key",
        "403": "The key's account may not use agents through the API",
        "404": "No such resource, or not the caller's",
        "429": "Rate limited (see `Retry-After`)",
        "503": "The gateway is overloaded, or a service it needs did not answer (see `Retry-After`)",
    },
    "/admin/v1/": {
        "400": "The request is invalid (`param` names the parameter)",
        "409": "The body conflicts with what is stored, such as a name or an email already taken (`conflict`)",
        "401": "Missing or wrong admin token",
        "503": "The gateway is overloaded, or the owning service did not answer",
    },
}
_SECURITY_SCHEMES = {
    "bearerAuth": {"type": "http", "scheme": "bearer", "description": "an API key (`sk-…`)"},
    "adminToken": {"type": "http", "scheme": "bearer", "description": "the gateway's admin token (`ADMIN_TOKEN`)"},
}
#: FastAPI's own validation-error schemas: never sent (a validation error is a 400 in the OpenAI envelope).
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def document_errors(schema: dict[str, Any]) -> None:
    """Describe the answers the gateway really gives on every route of the API: every error status is an
    ``ErrorResponse`` (the OpenAI envelope), a validation error a 400 (never FastAPI's 422), with the
    errors any route may give (auth, rate limit, load shedding), and the credentials each route takes."""
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {}).setdefault("ErrorResponse", _COMPONENTS["ErrorResponse"])
    for name, scheme in _SECURITY_SCHEMES.items():
        components.setdefault("securitySchemes", {}).setdefault(name, scheme)
    for path, operations in schema.get("paths", {}).items():
        prefix = next((p for p in _COMMON_ERRORS if path.startswith(p)), None)
        if prefix is None:
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            validation = responses.get("422", {}).get("content", {}).get("application/json", {}).get("schema", {})
            if validation.get("$ref", "").endswith("/HTTPValidationError"):
                del responses["422"]
            for status, description in _COMMON_ERRORS[prefix].items():
                if status != "409" or "requestBody" in operation:
                    responses.setdefault(status, {"description": description})
            for status, response in responses.items():
                if int(status) >= 400:
                    response["content"] = {"application/json": {"schema": _ref("ErrorResponse")}}
            operation.setdefault("security", [{"adminToken" if prefix == "/admin/v1/" else "bearerAuth": []}])
    if "HTTPValidationError" not in _refs(schema.get("paths", {})):
        for name in _FASTAPI_VALIDATION:
            components["schemas"].pop(name, None)


def _refs(node: Any) -> set[str]:
    """The names of the component schemas ``node`` refers to."""
    if isinstance(node, dict):
        found = {node["$ref"].rsplit("/", 1)[-1]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node)) if node else set()
    return set()


def document_openai_routes(app: FastAPI) -> None:
    """Make ``app.openapi()`` (what ``/openapi.json`` and ``/docs`` serve) include the plain OpenAI routes
    (chat completions, create response); the stored responses' routes are FastAPI's own. Every route's
    error answers are described as they are sent (:func:`document_errors`)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()  # FastAPI's own document, built once and cached on the app
        if "securitySchemes" in schema.get("components", {}):
            return schema  # completed already
        paths = schema.setdefault("paths", {})
        for path, make in ((CHAT_PATH, chat_operation), (RESPONSES_PATH, responses_operation)):
            if "post" in paths.get(path, {}):
                continue
            operation, components = make()
            paths.setdefault(path, {})["post"] = operation
            parts = schema.setdefault("components", {})
            for name, component in components.items():
                parts.setdefault("schemas", {}).setdefault(name, component)
        document_errors(schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
