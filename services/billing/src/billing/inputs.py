"""What billing accepts in a request: ids its columns can hold, costs a BIGINT can carry. Pure.

Every request/reply handler answers a bad request with a 400 (:class:`billing.errors.BadRequest`)
before it reaches the database: an over-long or NUL-holding id would otherwise fail there (a 500,
after a log line), a cost beyond a BIGINT would fail in the driver, and a run id that is not a NATS
subject token (billing publishes ``run.admitted.v1.<run_id>``) would make nats-py refuse the publish
— or, 100,000 characters long, make the server close billing's connection. The handlers still map
any data error the database raises (:mod:`billing.faults`) to a 400, as a backstop.
"""

from __future__ import annotations

import re

from .db import prices, reservations
from .errors import BadRequest, NotFound
from .sanitize import INT64_MAX, RUN_ID_WIDTH, USER_ID_WIDTH, storable

RESERVATION_ID_WIDTH: int = reservations.c.id.type.length  # type: ignore[attr-defined]
MODEL_KEY_WIDTH: int = prices.c.model_key.type.length  # type: ignore[attr-defined]
#: What a NATS subject token cannot hold: whitespace and control characters, the separator, wildcards.
_NOT_A_TOKEN = re.compile(r"[\s\x00-\x1f\x7f.*>]")


def text(name: str, value: str, width: int) -> str:
    """``value`` when a column of ``width`` characters can store it; else a 400 naming ``name``."""
    if len(value) > width:
        raise BadRequest(f"{name} must be at most {width} characters", param=name)
    if not storable(value):
        raise BadRequest(f"{name} must not contain NUL (\\u0000) or unpaired surrogates", param=name)
    return value


def user_id(value: str, name: str = "user_id") -> str:
    return text(name, value, USER_ID_WIDTH)


def run_id(value: str, name: str = "run_id") -> str:
    """A run id: stored (128 characters at most) and a subject token (it names the run's subjects)."""
    text(name, value, RUN_ID_WIDTH)
    if not value or _NOT_A_TOKEN.search(value):
        raise BadRequest(f"{name} must be a non-empty id without spaces, dots or wildcards", param=name)
    return value


def cost(micro: int, name: str = "max_output_tokens") -> int:
    """A worst-case cost (µcr) that a BIGINT holds; beyond it, no balance could ever cover it."""
    if micro > INT64_MAX:
        raise BadRequest("prompt_tokens and max_output_tokens make a worst-case cost beyond any balance", param=name)
    return micro


def ledger_cursor(value: str | None) -> int | None:
    """``?after=le_<seq>``: None when absent; a sequence number (a 404 for anything that is not one)."""
    if not value:
        return None
    digits = value[3:]
    if not value.startswith("le_") or not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        raise NotFound(f"no ledger entry {value[:80]!r}", param="after")
    seq = int(digits)
    if seq > INT64_MAX:
        raise NotFound(f"no ledger entry {value!r}", param="after")
    return seq
