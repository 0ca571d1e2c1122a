"""Bounds on what the admin API accepts: what storage can hold and what arithmetic can carry.

A value outside them is refused where it enters (a 400 naming the field), never stored to fail later:
PostgreSQL cannot store the NUL character, a BIGINT holds 64 bits, the gateway's JSON encoder refuses
integers beyond 64 bits, and a run's worst-case cost must fit in a BIGINT of micro-credits.

Pure: pydantic only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Width of every id column (users, groups, keys, agents, grants) and of role names.
ID_MAX_LENGTH = 64

#: Credits one ``credits.add`` may move either way (10^12 credits = 1,000,000 USD). A balance is a
#: BIGINT of micro-credits, so it holds about 9.2 × 10^12 credits in all.
MAX_CREDITS_CHANGE = Decimal(10**12)
#: The highest price, in USD per million tokens. With it a call of up to ~92 million tokens costs
#: less than a BIGINT of micro-credits holds.
MAX_PRICE = Decimal(100_000)

#: An agent's instructions (a TEXT column; they go to the model with every request).
MAX_INSTRUCTIONS_LENGTH = 100_000
MAX_TOOLS, MAX_TOOL_NAME_LENGTH = 128, 200
#: How many groups one user update may name.
MAX_GROUPS = 256
#: An API key's expiry lies within these (a date PostgreSQL and Python can both convert to UTC).
EXPIRES_MIN = datetime(1970, 1, 1, tzinfo=UTC)
EXPIRES_MAX = datetime(9000, 1, 1, tzinfo=UTC)

#: ``model_parameters``: how deep, how many values in all, how long a key, a string, the whole.
PARAMS_MAX_DEPTH = 8
PARAMS_MAX_NODES = 1_000
PARAMS_MAX_KEY_LENGTH = 100
PARAMS_MAX_STRING_LENGTH = 10_000
PARAMS_MAX_BYTES = 32 * 1024
MAX_OUTPUT_TOKENS = 1_000_000
MAX_STEPS = 100

#: Known model parameters and their ranges: (integers only, low, high). ``None`` is always allowed
#: (the runner leaves a null parameter out).
KNOWN_PARAMETERS: dict[str, tuple[bool, float, float]] = {
    **{
        name: (True, 1, MAX_OUTPUT_TOKENS)
        for name in ("max_tokens", "maxTokens", "max_output_tokens", "maxOutputTokens", "max_completion_tokens")
    },
    "max_steps": (True, 1, MAX_STEPS),
    "temperature": (False, 0, 2),
    "top_p": (False, 0, 1),
    "topP": (False, 0, 1),
    "top_k": (True, 0, 1_000),
    "topK": (True, 0, 1_000),
    "frequency_penalty": (False, -2, 2),
    "frequencyPenalty": (False, -2, 2),
    "presence_penalty": (False, -2, 2),
    "presencePenalty": (False, -2, 2),
    "n": (True, 1, 128),
}


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text (PostgreSQL refuses NUL; UTF-8 refuses lone surrogates)."""
    if "\x00" in value:
        return "must not contain the NUL character (\\u0000)"
    if value.isascii():
        return None
    try:
        value.encode()
    except UnicodeEncodeError:
        return "must be valid Unicode (no unpaired surrogates)"
    return None


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise PydanticCustomError("string_not_storable", problem)
    return value


#: A string that PostgreSQL can store (lengths are set per field with ``Field``).
StoredStr = Annotated[str, AfterValidator(_storable)]


def _expiry(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if not EXPIRES_MIN <= aware <= EXPIRES_MAX:
        raise PydanticCustomError(
            "datetime_out_of_range", "must lie between {low} and {high}", {"low": "1970-01-01", "high": "9000-01-01"}
        )
    return value


#: An expiry time within :data:`EXPIRES_MIN` … :data:`EXPIRES_MAX`.
Expiry = Annotated[datetime | None, AfterValidator(_expiry)]


def json_problem(value: Any, *, max_depth: int = 64) -> tuple[tuple[str | int, ...], str] | None:
    """Where and why ``value`` (decoded JSON) would not survive a strict JSON encoder (orjson): an
    integer beyond 64 bits, a float that is not finite, text that cannot be stored, nesting deeper than
    ``max_depth``. ``None`` when it is fine. Iterative: depth itself cannot exhaust the stack."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if len(loc) > max_depth:
            return loc, f"nests deeper than {max_depth} levels"
        problem = _scalar_problem(item)
        if problem is not None:
            return loc, problem
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return loc, "keys must be strings"
                key_problem = text_problem(key)
                if key_problem is not None:
                    return (*loc, key), f"key {key_problem}"
                stack.append((sub, (*loc, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, (*loc, i)) for i, sub in enumerate(item))
    return None


def _scalar_problem(item: Any) -> str | None:
    if isinstance(item, bool) or item is None:
        return None
    if isinstance(item, int):
        return None if INT64_MIN <= item <= INT64_MAX else "integers must fit in 64 bits"
    if isinstance(item, float):
        return None if math.isfinite(item) else "numbers must be finite"
    if isinstance(item, str):
        return text_problem(item)
    if isinstance(item, (Mapping, list, tuple)):
        return None
    return f"unsupported JSON value of type {type(item).__name__}"


def parameters_problem(params: Mapping[str, Any]) -> tuple[tuple[str | int, ...], str] | None:
    """Where and why an agent's ``model_parameters`` are refused, or ``None``."""
    for name, (integral, low, high) in KNOWN_PARAMETERS.items():
        value = params.get(name)
        if value is None:
            continue
        kind = "an integer" if integral else "a number"
        ok_type = isinstance(value, int) if integral else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not low <= value <= high:
            return (name,), f"must be {kind} from {_num(low)} to {_num(high)}"
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(params, ())]
    nodes = 1
    while stack:
        item, loc = stack.pop()
        if len(loc) > PARAMS_MAX_DEPTH:
            return loc, f"nests deeper than {PARAMS_MAX_DEPTH} levels"
        problem = _scalar_problem(item)
        if problem is not None:
            return loc, problem
        if isinstance(item, str) and len(item) > PARAMS_MAX_STRING_LENGTH:
            return loc, f"strings must be at most {PARAMS_MAX_STRING_LENGTH} characters"
        if isinstance(item, (Mapping, list, tuple)):
            nodes += len(item)
            if nodes > PARAMS_MAX_NODES:
                return (), f"must hold at most {PARAMS_MAX_NODES} values in all"
        if isinstance(item, Mapping):
            for key, sub in item.items():
                if not isinstance(key, str):
                    return loc, "keys must be strings"
                key_problem = text_problem(key)
                if key_problem is None and not 1 <= len(key) <= PARAMS_MAX_KEY_LENGTH:
                    key_problem = f"must be 1 to {PARAMS_MAX_KEY_LENGTH} characters"
                if key_problem is not None:
                    return (*loc, key[:PARAMS_MAX_KEY_LENGTH]), f"key {key_problem}"
                stack.append((sub, (*loc, key)))
        elif isinstance(item, (list, tuple)):
            stack.extend((sub, (*loc, i)) for i, sub in enumerate(item))
    if len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()) > PARAMS_MAX_BYTES:
        return (), f"must be at most {PARAMS_MAX_BYTES} bytes of JSON"
    return None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _model_parameters(value: dict[str, Any]) -> dict[str, Any]:
    found = parameters_problem(value)
    if found is not None:
        loc, message = found
        bad = _at(value, loc)
        raise ValidationError.from_exception_data(
            "model_parameters",
            [InitErrorDetails(type=PydanticCustomError("model_parameter", message), loc=loc, input=bad)],
        )
    return value


def _at(value: Any, loc: tuple[str | int, ...]) -> Any:
    for part in loc:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


#: An agent's model parameters, bounded (see :func:`parameters_problem`); errors name the parameter.
ModelParameters = Annotated[dict[str, Any], AfterValidator(_model_parameters)]
