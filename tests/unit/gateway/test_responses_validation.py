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
    ],
)
def test_input_item_ids_and_function_names_are_bounded(items: list[dict[str, Any]], param: str) -> None:
    err = _convert(items)
    assert err.status == 400 and err.info.param == param


def test_good_items_are_taken() -> None:
    converted = convert_input([CALL | {"id": "fc_1"}, OUTPUT], lambda kind, i: f"{kind}_{i}")
    assert converted.items[0]["id"] == "fc_1" and converted.messages[0].tool_calls
