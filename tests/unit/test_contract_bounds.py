"""contracts.bounds: what a string, a number and an agent's model parameters may be on the admin wire."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.admin import AgentCreate, AgentUpdate, ApiKeyCreate, CreditsAdd, PriceSet, UserCreate
from contracts.bounds import INT64_MAX, INT64_MIN, json_problem, parameters_problem, text_problem

pytestmark = pytest.mark.unit

AGENT = {"name": "a", "provider": "p", "model": "m", "owner_id": "u"}


def test_text_that_postgres_cannot_store() -> None:
    assert text_problem("plain, ünïcode, 😀") is None
    assert text_problem("a\x00b") is not None
    assert text_problem("\ud800") is not None


@pytest.mark.parametrize(
    ("value", "loc"),
    [
        ({"a": [1, {"b": INT64_MAX + 1}]}, ("a", 1, "b")),
        ({"a": INT64_MIN - 1}, ("a",)),
        ({"a": float("nan")}, ("a",)),
        ({"a": [float("-inf")]}, ("a", 0)),
        ({"a\x00": 1}, ("a\x00",)),
        ({"a": "\x00"}, ("a",)),
        ({"a": object()}, ("a",)),
    ],
)
def test_json_problem_finds_what_a_strict_encoder_refuses(value: Any, loc: tuple[Any, ...]) -> None:
    found = json_problem(value)
    assert found is not None and found[0] == loc


def test_json_problem_is_iterative_and_bounded_in_depth() -> None:
    deep: Any = 1
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep]
    found = json_problem(deep, max_depth=64)
    assert found is not None and "deeper" in found[1]
    assert json_problem({"a": [INT64_MAX, INT64_MIN, 1.5, None, True, "x"]}) is None


@pytest.mark.parametrize(
    "params",
    [
        {"max_tokens": 1, "temperature": 0, "top_p": 1, "max_steps": 100, "seed": INT64_MAX},
        {"max_tokens": None, "temperature": 2.0, "presence_penalty": -2, "stop": ["\n"], "disableStreaming": True},
        {"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"a": {}}}}}},
    ],
)
def test_sensible_model_parameters_pass(params: dict[str, Any]) -> None:
    assert parameters_problem(params) is None
    assert AgentCreate.model_validate({**AGENT, "model_parameters": params}).model_parameters == params


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"max_tokens": 0}, ("max_tokens",)),
        ({"max_tokens": 1_000_001}, ("max_tokens",)),
        ({"max_tokens": 1.0}, ("max_tokens",)),
        ({"maxOutputTokens": True}, ("maxOutputTokens",)),
        ({"max_tokens": "100"}, ("max_tokens",)),
        ({"temperature": -0.1}, ("temperature",)),
        ({"top_p": 1.01}, ("top_p",)),
        ({"max_steps": 101}, ("max_steps",)),
        ({"n": 0}, ("n",)),
        ({"seed": INT64_MAX + 1}, ("seed",)),
        ({"": 1}, ("",)),
        ({"x" * 101: 1}, ("x" * 100,)),
        ({"s": "x" * 10_001}, ("s",)),
        ({"l": list(range(1_000))}, ()),
        ({"d": {"d": {"d": {"d": {"d": {"d": {"d": {"d": {"d": 1}}}}}}}}}, ("d",) * 9),
        ({f"k{i}": "x" * 9_000 for i in range(4)}, ()),
    ],
)
def test_model_parameters_are_bounded(params: dict[str, Any], loc: tuple[Any, ...]) -> None:
    found = parameters_problem(params)
    assert found is not None and found[0] == loc
    for model, body in (
        (AgentCreate, {**AGENT, "model_parameters": params}),
        (AgentUpdate, {"model_parameters": params}),
    ):
        with pytest.raises(ValidationError) as caught:
            model.model_validate(body)
        assert caught.value.errors()[0]["loc"] == ("model_parameters", *loc)


@pytest.mark.parametrize(
    ("model", "body", "field"),
    [
        (UserCreate, {"name": "a\x00"}, "name"),
        (UserCreate, {"name": "a", "email": "\x00"}, "email"),
        (CreditsAdd, {"amount": "1000000000000.000001"}, "amount"),
        (CreditsAdd, {"amount": -(10**12) - 1}, "amount"),
        (CreditsAdd, {"amount": "NaN"}, "amount"),
        (CreditsAdd, {"amount": "1", "note": "\x00"}, "note"),
        (PriceSet, {"input": "100000.000001", "output": "1"}, "input"),
        (ApiKeyCreate, {"name": "k", "rate_limit_per_minute": 2**31}, "rate_limit_per_minute"),
        (ApiKeyCreate, {"name": "k", "expires_at": "1969-12-31T23:59:59Z"}, "expires_at"),
        (AgentCreate, {**AGENT, "tools": ["a", ""]}, "tools"),
    ],
)
def test_worst_values_are_refused(model: Any, body: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(body)
    assert caught.value.errors()[0]["loc"][0] == field


def test_limits_themselves_are_accepted() -> None:
    assert CreditsAdd.model_validate({"amount": "-1000000000000"}).amount == Decimal(-(10**12))
    assert PriceSet.model_validate({"input": "100000", "output": "0"}).input == Decimal(100_000)
    key = ApiKeyCreate.model_validate(
        {"name": "k", "rate_limit_per_minute": 2**31 - 1, "expires_at": "8999-12-31T00:00:00"}
    )
    assert key.expires_at == datetime(8999, 12, 31) and key.rate_limit_per_minute == 2**31 - 1
    assert ApiKeyCreate.model_validate({"name": "k", "expires_at": datetime(2030, 1, 1, tzinfo=UTC)}).expires_at
