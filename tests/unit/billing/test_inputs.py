"""What billing accepts in a request, pure: ids its columns hold, amounts a BIGINT holds, exactly."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from billing import inputs
from billing.errors import BadRequest, NotFound
from billing.money import MAX_MICRO, MoneyError, to_micro

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("value", ["run_1", "run_" + "a" * 124, "r:0", "run-ÄÖ"])
def test_run_ids_that_are_stored_and_subject_tokens(value: str) -> None:
    assert inputs.run_id(value) == value


@pytest.mark.parametrize(
    "value", ["", "r" * 129, "a b", "a\tb", "a.b", "a*", "a>", "a\x00", "a\r\nPUB x 1", "\ud800", "a\x7f"]
)
def test_run_ids_that_are_not(value: str) -> None:
    with pytest.raises(BadRequest) as caught:
        inputs.run_id(value)
    assert caught.value.info.status == 400 and caught.value.info.param == "run_id"


def test_ids_and_texts() -> None:
    assert inputs.user_id("u" * 64) == "u" * 64
    for bad in ("u" * 65, "u\x00", "\udfff"):
        with pytest.raises(BadRequest):
            inputs.user_id(bad)
    with pytest.raises(BadRequest, match="at most 64"):
        inputs.text("reservation_id", "r" * 65, inputs.RESERVATION_ID_WIDTH)


def test_costs_beyond_a_bigint_are_refused() -> None:
    assert inputs.cost(MAX_MICRO) == MAX_MICRO
    with pytest.raises(BadRequest, match="beyond any balance"):
        inputs.cost(MAX_MICRO + 1)


@pytest.mark.parametrize(("value", "seq"), [(None, None), ("", None), ("le_0", 0), ("le_42", 42)])
def test_ledger_cursors(value: str | None, seq: int | None) -> None:
    assert inputs.ledger_cursor(value) == seq


@pytest.mark.parametrize("value", ["42", "le_", "le_-1", "le_²", "le_٣", "le_" + "9" * 19, "le_" + "9" * 5000])
def test_what_is_not_a_ledger_cursor_is_not_found(value: str) -> None:
    with pytest.raises(NotFound):
        inputs.ledger_cursor(value)


@pytest.mark.parametrize(
    ("value", "micro"),
    [
        ("9223372036854.775807", MAX_MICRO),
        ("-9223372036854.775807", -MAX_MICRO),
        ("1.000000000000000000000000000000", 1_000_000),
        (Decimal("0E-40"), 0),
        ("1E+3", 1_000_000_000),
    ],
)
def test_amounts_up_to_a_bigint_convert_exactly(value: str | Decimal, micro: int) -> None:
    assert to_micro(value) == micro


@pytest.mark.parametrize(
    "value",
    [
        "9223372036854.775808",
        "1e14",
        "1e999999",
        "9" * 100_000,
        "-" + "9" * 100_000,
        "1.0000000000000000000000000001",  # 29 digits: a plain Decimal product would round it to 1
        "0.0000001",
    ],
)
def test_amounts_beyond_a_bigint_or_a_micro_credit_are_refused_at_once(value: str) -> None:
    started = time.perf_counter()
    with pytest.raises(MoneyError) as caught:
        to_micro(value)
    assert time.perf_counter() - started < 0.05  # never an int() of 100,000 digits on the event loop
    assert len(str(caught.value)) < 200  # the value is not echoed back whole
