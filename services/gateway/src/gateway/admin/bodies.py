"""Admin request bodies: parsed from the raw JSON, validated with the contract models, 400 on any problem.

FastAPI's own body parsing would turn ``{"amount": 0.1}`` into a binary float before pydantic sees
it. Here JSON numbers with a fraction or exponent are parsed as :class:`~decimal.Decimal` (exact, from
their literal text) so money fields can refuse them outright — money is a decimal string matching
:data:`MONEY_PATTERN` exactly, or an integer, never a JSON float — while other fields (an agent's
``temperature``) get an ordinary float. Booleans and integers are taken as JSON writes them only
(the contract models declare them strict): ``"false"`` is not false, ``true`` is not 1.

A body is read only as JSON (415 otherwise) and only up to the gateway's ``admin_max_body_bytes``
(413 beyond); one nested deeper than :data:`MAX_DEPTH` is refused before it is walked. Every problem
of a body's fields is named in one 400 (:mod:`contracts.problems`): pydantic's, and those of a route's
own ``check`` (an agent's provider and tools, which only the catalog knows), in field order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from contracts.problems import Problem, describe, from_pydantic, in_field_order

from ..bodylimits import read_json_body
from ..context import GatewayContext
from ..deps import CtxDep
from ..errors import GatewayError, describe_validation_error

M = TypeVar("M", bound=BaseModel)
#: A route's own check of a body's JSON (after the JSON-level checks): more problems, or none.
Check = Callable[[GatewayContext, dict[str, Any]], Awaitable[list[Problem]]]

#: How deeply an admin body may nest (an agent's model parameters are the deepest part, at most 8).
MAX_DEPTH = 32

#: A money string: an optional minus, ASCII digits, an optional fraction. Nothing Python's ``Decimal``
#: also reads ("+5", " 5 ", "5_000", "1E+12", other scripts' digits such as "٣") is taken.
MONEY_PATTERN = r"^-?[0-9]+(\.[0-9]+)?$"
_IS_MONEY = re.compile(MONEY_PATTERN).fullmatch
#: How a money field is documented: an integer, or a decimal number written as a string.
MONEY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string", "pattern": MONEY_PATTERN}],
    "description": "a decimal string or an integer (never a JSON float)",
}


def parse_body(model: type[M], raw: bytes, *, money: tuple[str, ...] = ()) -> M:
    """Validate ``raw`` JSON as ``model``; top-level ``money`` fields must be strings or integers."""
    return validated(model, read_fields(raw, money))


def read_fields(raw: bytes, money: tuple[str, ...] = ()) -> dict[str, Any]:
    """The JSON object of ``raw`` (400 for anything else, or a float in a ``money`` field); outside
    money fields, numbers with a fraction are floats again."""
    if not raw.strip():
        raise GatewayError.bad_request("A JSON request body is required.")
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        # ValueError also covers an integer literal of more digits than Python converts.
        raise GatewayError.bad_request("We could not parse the JSON body of your request.") from exc
    if not isinstance(data, dict):
        raise GatewayError.bad_request("The request body must be a JSON object.")
    if _depth_exceeds(data, MAX_DEPTH):
        raise GatewayError.bad_request(f"The request body nests deeper than {MAX_DEPTH} levels.")
    for name in money:
        value = data.get(name)
        if isinstance(value, (Decimal, bool)) or (isinstance(value, str) and not _IS_MONEY(value)):
            raise GatewayError.bad_request(
                f"Invalid value for '{name}': money is a decimal string (\"12.50\": digits 0-9, an optional "
                "leading '-' and fraction) or an integer, never a JSON float.",
                param=name,
            )
    return {k: (v if k in money else _floats(v)) for k, v in data.items()}


def validated(model: type[M], data: dict[str, Any], extra: list[Problem] | None = None) -> M:
    """``data`` as ``model``, or one 400 naming every problem: pydantic's and ``extra``."""
    errors: list[Any] = []
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)  # type: ignore[assignment]
    if not errors and not extra:
        return body
    if not extra:
        message, param = describe_validation_error(errors)
        raise GatewayError.bad_request(message, param)
    found = in_field_order([*from_pydantic(errors), *extra], list(model.model_fields))
    param = found[0][0]
    message = f"Invalid value for '{param}': {found[0][1]}." if len(found) == 1 else describe(found)
    raise GatewayError.bad_request(message, param)


def json_body(
    model: type[M], *, money: tuple[str, ...] = (), check: Check | None = None
) -> Callable[..., Awaitable[M]]:
    """A FastAPI dependency answering the request's body as ``model`` (see :func:`parse_body`), its
    problems and those ``check`` finds answered together."""

    async def dependency(request: Request, ctx: CtxDep) -> M:
        raw = await read_json_body(request, ctx.settings.admin_max_body_bytes, ctx.settings.body_timeout_s)
        data = read_fields(raw, money)
        extra = await check(ctx, data) if check is not None else []
        return validated(model, data, extra)

    dependency.__name__ = f"{model.__name__}_body"
    return dependency


def body_doc(model: type[BaseModel], *, money: tuple[str, ...] = ()) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the route's JSON body (FastAPI can't see a raw parse)."""
    schema = model.model_json_schema()
    for name in money:
        field = schema.get("properties", {}).get(name)
        if field is not None:
            nullable = {"type": "null"} in field.get("anyOf", [])
            alternatives = [*MONEY_SCHEMA["anyOf"], *([{"type": "null"}] if nullable else [])]
            schema["properties"][name] = {**MONEY_SCHEMA, "anyOf": alternatives, "title": field.get("title", name)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _not_json(name: str) -> Any:
    """``NaN``, ``Infinity`` and ``-Infinity`` are Python's extensions, not JSON."""
    raise ValueError(f"{name} is not a JSON value")


def _depth_exceeds(value: Any, limit: int) -> bool:
    """Whether ``value`` nests deeper than ``limit`` (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def _floats(value: Any) -> Any:
    """Outside money fields, a JSON number with a fraction is an ordinary float again."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_floats(v) for v in value]
    return value
