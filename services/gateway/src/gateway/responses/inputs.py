"""A response's ``input`` → the run's messages, and the input items kept for ``input_items``.

``input`` is a string (one user message) or a list of items:

- ``message`` (``type`` may be left out) with role ``user``/``assistant``/``system``/``developer`` and a
  string or parts: ``input_text``, ``output_text`` (assistant turns sent back), ``input_image``
  (``image_url``), ``refusal``;
- ``function_call`` (the model called a client function) → an assistant message's ``tool_calls``,
  consecutive calls in one message;
- ``function_call_output`` → a ``tool`` message;
- ``mcp_call`` (an agent tool call sent back from an earlier output) → the call and its result; its
  fields bounded as OpenAI types them (``name`` a function name, ``server_label`` a short name,
  ``status`` one of OpenAI's, ``error`` a string, one of OpenAI's error objects or null);
- ``reasoning`` items are accepted and not sent to the model (they are the model's own notes);
- ``item_reference`` names an item of one of the caller's stored responses (an output item, or an
  input item), which stands in its place — what clients that rely on ``store`` send for earlier turns.

Anything else is a 400 naming the item: dropping it would change the conversation behind the
client's back. Framework-free.
"""

from __future__ import annotations

from typing import Any

from contracts import ChatMessage, FunctionCall, ToolCall
from contracts.bounds import text_problem

from ..errors import GatewayError
from ..schemas import IS_FUNCTION_NAME

_ROLES = ("user", "assistant", "system", "developer")
#: Longest id or name taken from an item (ids reach the provider and the store).
_MAX_ID = 256


def _bad(message: str, param: str) -> GatewayError:
    return GatewayError.bad_request(message, param)


def _text(value: Any, param: str, *, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise _bad(f"Invalid type for '{param}': expected a string.", param)
    problem = text_problem(value)
    if problem is not None:
        raise _bad(f"Invalid value for '{param}': {problem}.", param)
    if not allow_empty and not value:
        raise _bad(f"Invalid value for '{param}': it must not be empty.", param)
    return value


def _ident(value: Any, param: str) -> str:
    text = _text(value, param, allow_empty=False)
    if len(text) > _MAX_ID:
        raise _bad(f"Invalid value for '{param}': at most {_MAX_ID} characters.", param)
    return text


def _function_name(value: Any, param: str) -> str:
    name = _ident(value, param)
    if not IS_FUNCTION_NAME(name):
        raise _bad(f"Invalid value for '{param}': a function name is 1 to 64 letters, digits, '_' or '-'.", param)
    return name


def _parts(content: Any, role: str, param: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat content parts and the normalised Responses parts of a message's ``content`` list."""
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{param}': expected a string or an array of content parts.", param)
    chat: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise _bad(f"Invalid type for '{p}': expected an object.", p)
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            text = _text(part.get("text"), f"{p}.text")
            chat.append({"type": "text", "text": text})
            if role == "assistant":
                kept.append({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
            else:
                kept.append({"type": "input_text", "text": text})
        elif kind == "refusal":
            text = _text(part.get("refusal"), f"{p}.refusal")
            chat.append({"type": "text", "text": text})
            kept.append({"type": "refusal", "refusal": text})
        elif kind == "input_image":
            url = part.get("image_url")
            if url is None:
                raise _bad(
                    f"'{p}' has no 'image_url': images are taken by URL or data URL ('file_id' is not supported).",
                    f"{p}.image_url",
                )
            url = _text(url, f"{p}.image_url", allow_empty=False)
            detail = part.get("detail") or "auto"
            if detail not in ("auto", "low", "high"):
                raise _bad(f"Invalid value for '{p}.detail': one of 'auto', 'low', 'high'.", f"{p}.detail")
            if role != "user":
                raise _bad(f"'{p}': images are taken in 'user' messages only.", p)
            chat.append({"type": "image_url", "image_url": {"url": url, "detail": detail}})
            kept.append({"type": "input_image", "image_url": url, "detail": detail})
        else:
            raise _bad(
                f"Unsupported content part type {kind!r} in '{p}': use 'input_text', 'output_text' or 'input_image'.",
                f"{p}.type",
            )
    return chat, kept


class InputConverter:
    """Turns one request's ``input`` into chat messages and stored input items (``item_id(kind, i)``
    names item i); ``params`` names the input item each message came from."""

    def __init__(self, item_id: Any, references: dict[str, dict[str, Any]] | None = None) -> None:
        self._item_id = item_id
        self._references = references or {}
        self.messages: list[ChatMessage] = []
        self.params: list[str] = []
        self.items: list[dict[str, Any]] = []
        self._open_calls: list[ToolCall] | None = None
        self._param = "input"

    def convert(self, value: str | list[Any]) -> None:
        if isinstance(value, str):
            self._message("user", value, "input")
            return
        for i, item in enumerate(value):
            param = self._param = f"input[{i}]"
            if not isinstance(item, dict):
                raise _bad(f"Invalid type for '{param}': expected an input item object.", param)
            if item.get("id") is not None:
                _ident(item["id"], f"{param}.id")  # any item's: kept, or looked up, or sent back
            if item.get("type") == "item_reference":
                item = self._referenced(item, param)
            kind = item.get("type", "message")
            if kind == "message":
                role = item.get("role")
                if role not in _ROLES:
                    raise _bad(
                        f"Invalid value for '{param}.role': one of 'user', 'assistant', 'system', 'developer'.",
                        f"{param}.role",
                    )
                if "content" not in item:
                    raise _bad(f"Missing required parameter: '{param}.content'.", f"{param}.content")
                self._message(role, item["content"], f"{param}.content")
            elif kind == "function_call":
                self._function_call(item, param)
            elif kind == "function_call_output":
                self._function_output(item, param)
            elif kind == "mcp_call":
                self._mcp_call(item, param)
            elif kind == "reasoning":
                continue
            else:
                raise _bad(
                    f"Unsupported input item type {kind!r} in '{param}': use 'message', 'function_call' or "
                    "'function_call_output' (or 'previous_response_id' to continue a stored response).",
                    f"{param}.type",
                )

    def _referenced(self, item: dict[str, Any], param: str) -> dict[str, Any]:
        ref = item.get("id")
        found = self._references.get(ref) if isinstance(ref, str) else None
        if found is None:
            raise _bad(
                f"'{param}' refers to the item {ref!r}, which none of your stored responses holds.", f"{param}.id"
            )
        return found

    def _append(self, message: ChatMessage) -> None:
        self.messages.append(message)
        self.params.append(self._param)

    def _message(self, role: str, content: Any, param: str) -> None:
        self._open_calls = None
        index = len(self.items)
        if isinstance(content, str):
            _text(content, param)
            chat: str | list[dict[str, Any]] = content
            if role == "assistant":
                kept = [{"type": "output_text", "text": content, "annotations": [], "logprobs": []}]
            else:
                kept = [{"type": "input_text", "text": content}]
        else:
            chat, kept = _parts(content, role, param)
        self._append(ChatMessage(role=role, content=chat))  # type: ignore[arg-type]
        self.items.append(
            {"id": self._item_id("msg", index), "type": "message", "role": role, "status": "completed", "content": kept}
        )

    def _call(self, call_id: str, name: str, arguments: str) -> None:
        call = ToolCall(id=call_id, function=FunctionCall(name=name, arguments=arguments))
        if self._open_calls is not None:
            # Consecutive calls are one assistant turn (parallel calls): extend the last message.
            self._open_calls.append(call)
            last = self.messages[-1]
            self.messages[-1] = last.model_copy(update={"tool_calls": list(self._open_calls)})
            return
        self._open_calls = [call]
        self._append(ChatMessage(role="assistant", content=None, tool_calls=[call]))

    def _function_call(self, item: dict[str, Any], param: str) -> None:
        call_id = _ident(item.get("call_id"), f"{param}.call_id")
        name = _function_name(item.get("name"), f"{param}.name")
        arguments = _text(item.get("arguments", ""), f"{param}.arguments")
        self._call(call_id, name, arguments)
        self.items.append(
            {
                "id": item.get("id") if isinstance(item.get("id"), str) else self._item_id("fc", len(self.items)),
                "type": "function_call",
                "call_id": call_id,
                "name": name,
                "arguments": arguments,
                "status": "completed",
            }
        )

    def _function_output(self, item: dict[str, Any], param: str) -> None:
        call_id = _ident(item.get("call_id"), f"{param}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            chat, _ = _parts(output, "user", f"{param}.output")
            text = "".join(p.get("text", "") for p in chat if p.get("type") == "text")
        else:
            text = _text(output, f"{param}.output")
        self._open_calls = None
        self._append(ChatMessage(role="tool", content=text, tool_call_id=call_id))
        self.items.append(
            {
                "id": self._item_id("fco", len(self.items)),
                "type": "function_call_output",
                "call_id": call_id,
                "output": text,
                "status": "completed",
            }
        )

    def _mcp_call(self, item: dict[str, Any], param: str) -> None:
        """An agent tool's call sent back, bounded field by field as OpenAI's ``MCPToolCall`` types it:
        what is kept is stored with the response and read back by ``input_items`` (so nothing a
        client sends may be unstorable, or unwritable as JSON), and ``name`` reaches the provider."""
        item_id = _ident(item.get("id"), f"{param}.id")
        label = item.get("server_label")
        label = _label(label, f"{param}.server_label") if label not in (None, "") else _BUILTIN_LABEL
        name = _function_name(item.get("name"), f"{param}.name")
        arguments = _text(item.get("arguments", ""), f"{param}.arguments")
        output = item.get("output")
        if output is not None:
            output = _text(output, f"{param}.output")
        error = _mcp_error(item.get("error"), f"{param}.error")
        status = item.get("status")
        if status is None:
            status = "completed"
        elif status not in _MCP_STATUSES:
            raise _bad(f"Invalid value for '{param}.status': one of {_choices(_MCP_STATUSES)}.", f"{param}.status")
        result = output if output is not None else _error_text(error)
        self._call(item_id, name, arguments)
        self._append(ChatMessage(role="tool", content=result, tool_call_id=item_id))
        self._open_calls = None
        self.items.append(
            {
                "id": item_id,
                "type": "mcp_call",
                "server_label": label,
                "name": name,
                "arguments": arguments,
                "output": output,
                "error": error,
                "status": status,
            }
        )


#: An ``mcp_call``'s ``status`` (OpenAI's ``MCPToolCallStatus``).
_MCP_STATUSES = ("in_progress", "completed", "incomplete", "calling", "failed")
#: The ``server_label`` of an agent's built-in tools (the runner's), when an item names none.
_BUILTIN_LABEL = "switchboard"
#: An ``mcp_call`` error object's ``type`` → whether it carries ``code`` and ``message`` (else ``content``).
_MCP_ERRORS = {"mcp_protocol_error": True, "http_error": True, "mcp_tool_execution_error": False}
#: An error's ``code``: a JSON-RPC error code or an HTTP status, within 32 bits.
_MAX_CODE = 2**31 - 1


def _choices(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


def _label(value: Any, param: str) -> str:
    """A server label: a short name, as the runner names MCP servers (``[A-Za-z0-9_-]``)."""
    label = _ident(value, param)
    if not IS_FUNCTION_NAME(label):
        raise _bad(f"Invalid value for '{param}': a server label is 1 to 64 letters, digits, '_' or '-'.", param)
    return label


def _mcp_error(error: Any, param: str) -> str | dict[str, Any] | None:
    """An ``mcp_call``'s ``error``: ``null``, a string, or one of OpenAI's error objects
    (``mcp_protocol_error`` and ``http_error`` with an integer ``code`` and a ``message``;
    ``mcp_tool_execution_error`` with text ``content`` parts, as the gateway renders a failed tool),
    kept with only the fields OpenAI defines."""
    if error is None or isinstance(error, str):
        return error if error is None else _text(error, param)
    if not isinstance(error, dict):
        raise _bad(f"Invalid type for '{param}': expected a string, an error object or null.", param)
    kind = error.get("type")
    if not isinstance(kind, str) or kind not in _MCP_ERRORS:
        raise _bad(f"Invalid value for '{param}.type': one of {_choices(tuple(_MCP_ERRORS))}.", f"{param}.type")
    if _MCP_ERRORS[kind]:
        code = error.get("code")
        if isinstance(code, bool) or not isinstance(code, int) or not -_MAX_CODE - 1 <= code <= _MAX_CODE:
            raise _bad(f"Invalid value for '{param}.code': an integer within 32 bits.", f"{param}.code")
        return {"type": kind, "code": code, "message": _text(error.get("message"), f"{param}.message")}
    content = error.get("content")
    if not isinstance(content, list):
        raise _bad(f"Invalid type for '{param}.content': expected an array of text parts.", f"{param}.content")
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        p = f"{param}.content[{j}]"
        if not isinstance(part, dict) or part.get("type") != "text":
            raise _bad(f"Invalid value for '{p}': expected a text part ({{'type': 'text', 'text': ...}}).", p)
        parts.append({"type": "text", "text": _text(part.get("text"), f"{p}.text")})
    return {"type": kind, "content": parts}


def _error_text(error: str | dict[str, Any] | None) -> str:
    if error is None or isinstance(error, str):
        return error or ""
    if "content" in error:
        return "".join(p["text"] for p in error["content"])
    return str(error["message"])


def referenced_ids(value: str | list[Any]) -> list[str]:
    """The item ids ``input``'s ``item_reference`` items name (in order, once each)."""
    if isinstance(value, str):
        return []
    ids = [
        item["id"]
        for item in value
        if isinstance(item, dict) and item.get("type") == "item_reference" and isinstance(item.get("id"), str)
    ]
    return list(dict.fromkeys(ids))


def convert_input(
    value: str | list[Any], item_id: Any, references: dict[str, dict[str, Any]] | None = None
) -> InputConverter:
    """``input`` converted: ``messages`` for the run, ``items`` to store, ``params`` naming each
    message's item (``references``: the items ``item_reference`` may name, by id); 400 naming the
    first bad item."""
    converter = InputConverter(item_id, references)
    converter.convert(value)
    return converter


def check_pairing(prior: list[ChatMessage], converted: InputConverter) -> None:
    """Calls and their outputs must pair up, as every provider requires (chat's rule): each
    ``function_call_output`` answers a call made just before it (in ``input``, or as the last output of
    the previous response), and each call is answered before the conversation goes on. 400 otherwise,
    naming the item."""
    params = ["previous_response_id"] * len(prior) + converted.params
    open_calls: set[str] = set()
    opened_at = ""
    for message, param in zip([*prior, *converted.messages], params, strict=True):
        if message.role == "tool":
            if message.tool_call_id not in open_calls:
                raise _bad(
                    f"'{param}' answers the call {message.tool_call_id!r}, which no function call just before it made.",
                    f"{param}.call_id",
                )
            open_calls.discard(message.tool_call_id or "")
            continue
        if open_calls:
            raise _bad(
                f"The function call(s) of '{opened_at}' need a 'function_call_output' before the conversation goes on.",
                opened_at,
            )
        if message.role == "assistant" and message.tool_calls:
            open_calls = {c.id for c in message.tool_calls}
            opened_at = param
    if open_calls:
        raise _bad(f"The function call(s) of '{opened_at}' need a 'function_call_output'.", opened_at)
