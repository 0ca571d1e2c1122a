"""What the ledger can store of a usage record: metadata cleaned to fit, identities and amounts never touched."""

from __future__ import annotations

from typing import Any

import pytest

from billing.sanitize import (
    INT32_MAX,
    INT64_MAX,
    METADATA_WIDTHS,
    Unstorable,
    check_cost,
    clean_row,
    clean_text,
    close_fault,
    record_fault,
    storable,
)
from contracts import RunClosed, TokenUsage, UsageRecorded

pytestmark = pytest.mark.unit


def record(**over: Any) -> UsageRecorded:
    tokens = over.pop("usage", {"input_tokens": 10, "output_tokens": 5})
    values: dict[str, Any] = {
        "run_id": "run_1",
        "call_index": 0,
        "user_id": "u",
        "agent_id": "a",
        "provider": "openai",
        "model": "gpt-4o",
        "usage": TokenUsage(**tokens),
        **over,
    }
    return UsageRecorded(**values)


def row(**over: Any) -> dict[str, Any]:
    base = {
        "user_id": "u",
        "run_id": "r",
        "amount": -1,
        "input_tokens": 3_000_000_000,
        "agent_id": "a",
        "conversation_id": "c",
        "provider": "openai",
        "model": "gpt-4o",
        "price_key": "gpt-4o",
        "context": "normal",
        "note": None,
    }
    return {**base, **over}


def test_the_widths_are_the_ledger_columns() -> None:
    assert METADATA_WIDTHS == {
        "agent_id": 64,
        "conversation_id": 200,
        "provider": 32,
        "model": 200,
        "price_key": 200,
        "context": 16,
    }


@pytest.mark.parametrize(
    ("value", "ok"),
    [("plain", True), ("é – 日本", True), ("a\x00b", False), ("\ud800", False), ("\U0001f600", True), ("", True)],
)
def test_storable(value: str, ok: bool) -> None:
    assert storable(value) is ok


def test_clean_text_removes_nul_and_lone_surrogates_and_cuts_to_width() -> None:
    assert clean_text("a\x00b\x00c", 10) == "abc"
    assert clean_text("x\ud800y", 10) == "x?y"
    assert clean_text("é" * 300, 200) == "é" * 200
    assert clean_text("\x00" * 5 + "z" * 250, 200) == "z" * 200  # NUL removed before cutting


def test_a_row_that_fits_is_left_alone() -> None:
    r = row()
    assert clean_row(dict(r)) == r


def test_over_long_and_nul_metadata_is_cleaned_and_noted_identity_and_amounts_untouched() -> None:
    r = clean_row(row(conversation_id="c" * 201, agent_id="ag\x00ent", model="m" * 5000))
    assert r["conversation_id"] == "c" * 200
    assert r["agent_id"] == "agent"
    assert r["model"] == "m" * 200
    assert r["note"] == "metadata cleaned to fit the ledger: agent_id, conversation_id, model"
    assert (r["user_id"], r["run_id"], r["amount"], r["input_tokens"]) == ("u", "r", -1, 3_000_000_000)


def test_a_null_conversation_stays_null() -> None:
    assert clean_row(row(conversation_id=None))["conversation_id"] is None


def test_a_record_that_fits_has_no_fault() -> None:
    assert record_fault(record(conversation_id="c" * 10_000, usage={"input_tokens": INT64_MAX})) is None


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"user_id": "u" * 65}, "user_id is 65 characters"),
        ({"user_id": "u\x00"}, "user_id holds"),
        ({"run_id": "r" * 129}, "run_id is 129 characters"),
        ({"run_id": "r\x00"}, "run_id holds"),
        ({"call_index": INT32_MAX + 1}, "call_index"),
        ({"usage": {"output_tokens": INT64_MAX + 1}}, "output_tokens"),
        ({"usage": {"reasoning_tokens": 10**30, "output_tokens": 10**30}}, "tokens"),
    ],
)
def test_an_identity_or_amount_no_column_holds_is_a_fault(over: dict[str, Any], says: str) -> None:
    fault = record_fault(record(**over))
    assert fault is not None and says in fault


def test_close_faults() -> None:
    ok = RunClosed(run_id="r", user_id="u", calls=2, status="completed")
    assert close_fault(ok) is None
    assert "user_id" in (close_fault(ok.model_copy(update={"user_id": "x" * 65})) or "")
    assert "run_id" in (close_fault(ok.model_copy(update={"run_id": "\x00"})) or "")
    assert "calls" in (close_fault(ok.model_copy(update={"calls": INT32_MAX + 1})) or "")


def test_a_cost_beyond_a_bigint_is_unstorable() -> None:
    r = record()
    assert check_cost(r, INT64_MAX) == INT64_MAX
    with pytest.raises(Unstorable):
        check_cost(r, INT64_MAX + 1)
