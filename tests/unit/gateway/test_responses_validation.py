"""``POST /v1/responses`` bodies bounded at the edge as docs/limits.md says (found by a stranger's
check): what storage refuses and what no provider takes is a 400 naming the field, never stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.errors import GatewayError
from gateway.responses.inputs import convert_input
from gateway.responses.request import parse_create_request
from tests.support.openapi_schema import validate

pytestmark = pytest.mark.unit


def _nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def _format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"text": {"format": {"type": "json_schema", "name": "n", "schema": schema}}}


def refused(body: dict[str, Any]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        parse_create_request(json.dumps({"model": "agent_1", "input": "hi", **body}).encode())
    err = caught.value
    assert err.status == 400 and err.info.type == "invalid_request_error"
    validate("ErrorResponse", err.info.envelope())
    return err


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"metadata": {"k\u0000": "v"}}, "metadata.…", "NUL"),
        ({"metadata": {"k": "v\u0000"}}, "metadata.k", "NUL"),
        ({"metadata": {"k" * 100_000: "v"}}, "metadata.…", "at most 64 characters"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k", "at most 512 characters"),
        (_format({"type": "object", "properties": {"a\u0000": {"type": "string"}}}), "text.format.schema", "NUL"),
        (_format(_nested(20)), "text.format.schema", "deeper than 32 levels"),
        (_format({"type": "object", "properties": {"k" * 50_000: _nested(20)}}), "text.format.schema", "['…']"),
        (_format(_nested(150)), None, "nests too deeply"),
        ({"truncation": "bogus"}, "truncation", "'auto' or 'disabled'"),
        # Another kind of tool_choice is refused by name, not as each union member it fails.
        (
            {"tool_choice": {"type": "allowed_tools", "mode": "auto", "tools": []}},
            "tool_choice",
            "a tool_choice of type 'allowed_tools' is not served",
        ),
        ({"tool_choice": {"type": "x" * 10_000}}, "tool_choice", "of type '…' is not served"),
    ],
)
def test_what_storage_or_a_provider_refuses_is_a_400(body: dict[str, Any], param: str | None, says: str) -> None:
    err = refused(body)
    assert err.info.param == param
    assert says in err.info.message
    assert len(err.info.message) < 600  # the value is not echoed back (a path of 32 short keys at most)


def test_a_schema_within_bounds_is_taken() -> None:
    body = parse_create_request(json.dumps({"model": "agent_1", "input": "hi", **_format(_nested(10))}).encode())
    assert body.text is not None and body.text.format is not None and body.text.format.schema_ is not None


def _convert(items: list[dict[str, Any]]) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        convert_input(items, lambda kind, i: f"{kind}_{i}")
    return caught.value


CALL = {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "c", "output": "x"}


@pytest.mark.parametrize(
    ("items", "param"),
    [
        ([{"type": "message", "role": "user", "content": "hi", "id": "m" * 5000}], "input[0].id"),
        ([CALL | {"id": "f" * 300}, OUTPUT], "input[0].id"),
        ([CALL, OUTPUT | {"id": "o" * 300}], "input[1].id"),
        ([{"type": "message", "role": "user", "content": "hi", "id": "a\u0000"}], "input[0].id"),
        ([CALL | {"name": "bad name!"}, OUTPUT], "input[0].name"),
        ([CALL | {"name": "f" * 100}, OUTPUT], "input[0].name"),
        ([CALL | {"name": "f\n"}, OUTPUT], "input[0].name"),
    ],
)
def test_input_item_ids_and_function_names_are_bounded(items: list[dict[str, Any]], param: str) -> None:
    err = _convert(items)
    assert err.status == 400 and err.info.param == param


def test_good_items_are_taken() -> None:
    converted = convert_input([CALL | {"id": "fc_1"}, OUTPUT], lambda kind, i: f"{kind}_{i}")
    assert converted.items[0]["id"] == "fc_1" and converted.messages[0].tool_calls


MCP = {"type": "mcp_call", "id": "mcp_1", "name": "calc", "arguments": "{}", "output": "3"}
SAID = {"type": "message", "role": "user", "content": "ok"}


@pytest.mark.parametrize(
    ("item", "param"),
    [
        # Found by a stranger's check: stored as sent, and the big integer made input_items a 500 forever.
        (MCP | {"error": {"x": 100000000000000000000000000000}}, "input[0].error.type"),
        (MCP | {"error": {"type": "http_error", "code": 10**30, "message": "m"}}, "input[0].error.code"),
        (MCP | {"error": {"type": "http_error", "code": True, "message": "m"}}, "input[0].error.code"),
        (MCP | {"error": {"type": "mcp_protocol_error", "code": 1, "message": "a\u0000"}}, "input[0].error.message"),
        (MCP | {"error": {"type": "mcp_tool_execution_error", "content": "x"}}, "input[0].error.content"),
        (
            MCP | {"error": {"type": "mcp_tool_execution_error", "content": [{"type": "image"}]}},
            "input[0].error.content[0]",
        ),
        (MCP | {"error": ["x"]}, "input[0].error"),
        (MCP | {"error": "a\u0000b"}, "input[0].error"),
        (MCP | {"output": "a\u0000b"}, "input[0].output"),
        (MCP | {"output": {"x": 1}}, "input[0].output"),
        (MCP | {"arguments": "a\u0000"}, "input[0].arguments"),
        (MCP | {"server_label": "docs\u0000"}, "input[0].server_label"),
        (MCP | {"server_label": "my server"}, "input[0].server_label"),
        (MCP | {"server_label": "s" * 65}, "input[0].server_label"),
        (MCP | {"status": "x" * 2_000_000}, "input[0].status"),
        (MCP | {"status": 1}, "input[0].status"),
        (MCP | {"name": "calc tool"}, "input[0].name"),
        (MCP | {"name": "calc\n"}, "input[0].name"),
        (MCP | {"name": "c" * 65}, "input[0].name"),
        (MCP | {"name": None}, "input[0].name"),
        (MCP | {"id": None}, "input[0].id"),
    ],
)
def test_mcp_call_items_are_bounded_field_by_field(item: dict[str, Any], param: str) -> None:
    err = _convert([item, SAID])
    assert err.status == 400 and err.info.param == param
    validate("ErrorResponse", err.info.envelope())
    assert len(err.info.message) < 300  # the value is not echoed back


def test_mcp_call_items_as_the_gateway_renders_them_are_taken_and_kept_storable() -> None:
    failed = MCP | {
        "id": "mcp_2",
        "server_label": "docs",
        "output": None,
        "error": {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": "no such page"}]},
        "status": "failed",
        "approval_request_id": None,
        "extra": {"x": 10**30},
    }
    as_string = MCP | {"id": "mcp_3", "output": None, "error": "it broke"}
    protocol = MCP | {"id": "mcp_4", "output": None, "error": {"type": "http_error", "code": 502, "message": "down"}}
    converted = convert_input([MCP, failed, as_string, protocol, SAID], lambda kind, i: f"{kind}_{i}")
    assert [m.content for m in converted.messages if m.role == "tool"] == ["3", "no such page", "it broke", "down"]
    assert converted.items[0] == {
        "id": "mcp_1",
        "type": "mcp_call",
        "server_label": "switchboard",
        "name": "calc",
        "arguments": "{}",
        "output": "3",
        "error": None,
        "status": "completed",
    }
    assert converted.items[1]["error"] == failed["error"] and converted.items[1]["status"] == "failed"
    assert "extra" not in converted.items[1] and converted.items[1]["server_label"] == "docs"
    assert converted.items[3]["error"] == protocol["error"]
    for item in converted.items[:4]:
        validate("MCPToolCall", {**item, "error": None} if isinstance(item.get("error"), str) else item)
