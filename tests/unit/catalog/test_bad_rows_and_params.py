"""A stored agent that holds what cannot be served, parameters no column can hold, unrenderable answers."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from catalog.admin import check_parameters, dispatch, ok
from catalog.errors import BadRequest, CatalogError, Conflict, model_not_found, plausible_id
from catalog.repository.rows import agent_of
from contracts import AdminRequest

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _row(params: Any, tools: Any) -> SimpleNamespace:
    return SimpleNamespace(
        id="agent_1", name="A", description=None, provider="p", model="m", instructions=None,
        model_parameters=params, tools=tools, owner_id="user_1", created_at=NOW, updated_at=NOW,
    )  # fmt: skip


def test_a_bad_row_is_served_without_its_bad_values(caplog: pytest.LogCaptureFixture) -> None:
    row = _row({"max_tokens": 10**23, "temperature": 0.5, "w": [float("inf")], "s": "a\x00"}, ["ok", 7, "b\x00"])
    agent = agent_of(row)
    assert agent.model_parameters == {"temperature": 0.5} and agent.tools == ["ok"]
    assert "agent_1" in caplog.text and "max_tokens" in caplog.text
    assert agent_of(_row("not an object", "nor a list")).model_parameters == {}
    assert agent_of(_row(None, None)).tools == []


def test_a_write_that_would_store_a_bad_value_is_refused() -> None:
    with pytest.raises(Conflict) as caught:
        agent_of(_row({"max_tokens": 10**23}, []), strict=True)
    assert caught.value.param == "model_parameters"
    with pytest.raises(Conflict) as tools:
        agent_of(_row({}, [1]), strict=True)
    assert tools.value.param == "tools"
    assert agent_of(_row({"max_tokens": 5}, ["t"]), strict=True).model_parameters == {"max_tokens": 5}


def test_an_answer_that_cannot_be_rendered_is_an_error_not_a_reply() -> None:
    with pytest.raises(CatalogError):
        ok({"n": 2**64})
    assert ok({"n": 2**63 - 1}).body == {"n": 2**63 - 1}


@pytest.mark.parametrize(
    ("params", "query", "param"),
    [
        ({"user_id": "u\x00"}, {}, "user_id"),
        ({"user_id": "u" * 65}, {}, "user_id"),
        ({}, {"after": "\ud800"}, "after"),
        ({}, {"limit": "9" * 65}, "limit"),
        ({"x" * 1000: "\x00"}, {}, "x" * 200),
    ],
)
def test_parameters_no_column_can_hold_are_a_400(params: dict[str, str], query: dict[str, str], param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_parameters(AdminRequest(op="users.get", params=params, query=query))
    assert caught.value.param == param
    check_parameters(AdminRequest(op="users.get", params={"user_id": "u" * 64}, query={"limit": "100"}))


async def test_an_unknown_op_is_not_echoed_whole() -> None:
    reply = await dispatch(None, AdminRequest(op="x" * 100_000))  # type: ignore[arg-type]
    assert reply.status == 400 and len(reply.model_dump_json()) < 1000
    nul = await dispatch(None, AdminRequest(op="users.\x00"))  # type: ignore[arg-type]
    assert nul.status == 400 and "\x00" not in nul.error.message  # type: ignore[union-attr]


def test_model_not_found_names_only_a_plausible_id() -> None:
    assert plausible_id("agent_1") and not plausible_id("") and not plausible_id("a" * 65)
    assert not plausible_id("a\x00")
    assert "`agent_1`" in model_not_found("agent_1").message
    assert model_not_found("x" * 10_000).message == "The model does not exist or you do not have access to it."


def test_a_page_stops_before_it_outgrows_one_message() -> None:
    from catalog.admin import PAGE_BUDGET_BYTES, page
    from catalog.repository import PageResult

    big = [
        agent_of(_row({}, [])).model_copy(update={"id": f"agent_{i}", "instructions": "é" * 100_000}) for i in range(5)
    ]
    reply = page(PageResult(big, False))
    body = reply.body
    assert isinstance(body, dict) and body["has_more"] is True
    assert [a["id"] for a in body["data"]] == ["agent_0", "agent_1"] and body["last_id"] == "agent_1"
    assert len(reply.model_dump_json()) <= PAGE_BUDGET_BYTES + 10_000
    one = page(PageResult(big[:1], False)).body  # one item always fits, whatever its size
    assert isinstance(one, dict) and len(one["data"]) == 1 and one["has_more"] is False


async def test_a_reply_too_large_for_nats_is_an_error_reply() -> None:
    from catalog.handlers import MAX_REPLY_BYTES, _answer
    from catalog.metrics import Metrics
    from contracts import AdminReply

    async def huge(_: AdminRequest) -> AdminReply:
        return AdminReply(body={"x": "y" * MAX_REPLY_BYTES})

    raw = SimpleNamespace(body=AdminRequest(op="users.list").model_dump_json().encode())
    data = await _answer("admin", raw, Metrics(), AdminRequest, AdminReply, huge)  # type: ignore[arg-type]
    reply = AdminReply.model_validate_json(data)
    assert reply.status == 500 and reply.error is not None and reply.error.code == "reply_too_large"
