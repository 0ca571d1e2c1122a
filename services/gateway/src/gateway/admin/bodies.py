"""Admin request bodies: parsed from the raw JSON, validated with the contract models, 400 on any problem.

FastAPI's own body parsing would turn ``{"amount": 0.1}`` into a binary float before pydantic sees
it. Here JSON numbers with a fraction or exponent are parsed as :class:`~decimal.Decimal` (exact, from
their literal text) so money fields can refuse them outright — money is a decimal string or an
integer, never a JSON float — while other fields (an agent's ``temperature``) get an ordinary float.

A body is read only as JSON (415 otherwise) and only up to the gateway's ``admin_max_body_bytes``
(413 beyond); one nested deeper than :data:`MAX_DEPTH` is refused before it is walked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from ..bodylimits import read_json_body
from ..deps import CtxDep
from ..errors import GatewayError, describe_validation_error

M = TypeVar("M", bound=BaseModel)

#: How deeply an admin body may nest (an agent's model parameters are the deepest part, at most 8).
MAX_DEPTH = 32

#: How a money field is documented: an integer, or a decimal number written as a string.
MONEY_SCHEMA: dict[str, Any] = {
    "anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}],
    "description": "a decimal string or an integer (never a JSON float)",
}


def parse_body(model: type[M], raw: bytes, *, money: tuple[str, ...] = ()) -> M:
    """Validate ``raw`` JSON as ``model``; top-level ``money`` fields must be strings or integers."""
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
        if isinstance(value, (Decimal, bool)):
            raise GatewayError.bad_request(
                f"Invalid value for '{name}': money is a decimal string (\"12.50\") or an integer, never a JSON float.",
                param=name,
            )
    data = {k: (v if k in money else _floats(v)) for k, v in data.items()}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc.errors(include_url=False))  # type: ignore[arg-type]
        raise GatewayError.bad_request(message, param) from exc


def json_body(model: type[M], *, money: tuple[str, ...] = ()) -> Callable[..., Awaitable[M]]:
    """A FastAPI dependency answering the request's body as ``model`` (see :func:`parse_body`)."""

    async def dependency(request: Request, ctx: CtxDep) -> M:
        raw = await read_json_body(request, ctx.settings.admin_max_body_bytes)
        return parse_body(model, raw, money=money)

    dependency.__name__ = f"{model.__name__}_body"
    return dependency


def body_doc(model: type[BaseModel], *, money: tuple[str, ...] = ()) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the route's JSON body (FastAPI can't see a raw parse)."""
    schema = model.model_json_schema()
    for name in money:
        if name in schema.get("properties", {}):
            schema["properties"][name] = {**MONEY_SCHEMA, "title": schema["properties"][name].get("title", name)}
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
