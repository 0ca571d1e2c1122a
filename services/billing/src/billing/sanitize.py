"""What the ledger can store of a usage message: metadata cleaned to fit, or why it never can be. Pure.

A usage record is written by the runner, but parts of it come from a user (the conversation id) or
a provider (the token counts). PostgreSQL refuses a text holding NUL ("\\u0000"), a VARCHAR longer
than its column, an integer beyond its column's range — and one such record used to fail its whole
batch, forever. Two kinds of fields, two remedies:

- **metadata** (agent, conversation, provider, model, price key, context) describes the call, not
  what it cost or whose it is. :func:`clean_row` removes what PostgreSQL text refuses (NUL, lone
  surrogates) and cuts each value to its column's width; the entry's ``note`` names what was
  cleaned. The money is billed as usual.
- **identity and amounts** (user, run, call index, tokens, cost, a close's call count) are never
  guessed at: truncating a run id could merge two calls under one idempotency key, a user id could
  land on someone else's account. :func:`record_fault` / :func:`close_fault` say why such a message
  cannot be applied; the consumer parks it (``billing.deadletters``) — not billed, not lost.

Widths come from the tables in :mod:`billing.db`, so a migration that widens a column widens this too.
"""

from __future__ import annotations

from typing import Any

from contracts import RunClosed, UsageRecorded

from .db import accounts, ledger

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1  # BIGINT: tokens, µcr amounts and balances

TOKEN_FIELDS = ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens", "reasoning_tokens")
#: The ledger's metadata columns and their widths (characters).
METADATA_WIDTHS: dict[str, int] = {
    name: ledger.c[name].type.length  # type: ignore[attr-defined]
    for name in ("agent_id", "conversation_id", "provider", "model", "price_key", "context")
}
USER_ID_WIDTH: int = accounts.c.user_id.type.length  # type: ignore[attr-defined]
RUN_ID_WIDTH: int = ledger.c.run_id.type.length  # type: ignore[attr-defined]
NOTE_WIDTH: int = ledger.c.note.type.length  # type: ignore[attr-defined]


class Unstorable(ValueError):
    """A usage record whose amounts the ledger's columns cannot hold (raised inside a batch, so that
    the consumer isolates the record and parks it)."""


def storable(value: str) -> bool:
    """True when PostgreSQL's text accepts ``value`` as is (no NUL, valid UTF-8 once encoded)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): Python holds it, UTF-8 cannot
        return False
    return True


def clean_text(value: str, width: int) -> str:
    """``value`` without NUL, lone surrogates replaced by "?", cut to ``width`` characters."""
    if not storable(value):
        value = value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")
    return value[:width]


def clean_row(row: dict[str, Any]) -> dict[str, Any]:
    """Clean a ledger row's metadata in place (see the module docstring); returns the row.

    The common case — everything fits already — costs a length and a NUL check per field.
    """
    cleaned = []
    for name, width in METADATA_WIDTHS.items():
        value = row.get(name)
        if value is None or (len(value) <= width and value.isascii() and "\x00" not in value):
            continue
        fixed = clean_text(value, width)
        if fixed != value:
            row[name] = fixed
            cleaned.append(name)
    if cleaned:
        row["note"] = f"metadata cleaned to fit the ledger: {', '.join(cleaned)}"[:NOTE_WIDTH]
    return row


def _identity_fault(name: str, value: str, width: int) -> str | None:
    if len(value) <= width and value.isascii() and "\x00" not in value:  # the common case, cheaply
        return None
    if len(value) > width:
        return f"{name} is {len(value)} characters, the ledger takes {width}"
    if not storable(value):
        return f"{name} holds a character PostgreSQL text refuses (NUL or a lone surrogate)"
    return None


def record_fault(r: UsageRecorded) -> str | None:
    """Why ``r`` can never be applied, or None. (Its cost is checked when priced: see :func:`check_cost`.)"""
    fault = _identity_fault("user_id", r.user_id, USER_ID_WIDTH) or _identity_fault("run_id", r.run_id, RUN_ID_WIDTH)
    if fault:
        return fault
    if r.call_index > INT32_MAX:
        return f"call_index {r.call_index} is beyond the ledger's range"
    u = r.usage
    if max(u.input_tokens, u.cache_write_tokens, u.cache_read_tokens, u.output_tokens, u.reasoning_tokens) > INT64_MAX:
        name = next(n for n in TOKEN_FIELDS if getattr(u, n) > INT64_MAX)
        return f"{name} {getattr(u, name)} is beyond the ledger's range"
    return None


def close_fault(c: RunClosed) -> str | None:
    """Why a RunClosed can never be applied, or None."""
    fault = _identity_fault("user_id", c.user_id, USER_ID_WIDTH) or _identity_fault("run_id", c.run_id, RUN_ID_WIDTH)
    if fault:
        return fault
    if c.calls > INT32_MAX:
        return f"calls {c.calls} is beyond the ledger's range"
    return None


def check_cost(r: UsageRecorded, cost: int) -> int:
    """``cost`` (µcr) when a BIGINT holds it; else :class:`Unstorable`."""
    if cost > INT64_MAX:
        raise Unstorable(f"the cost of {r.run_id}:{r.call_index}, {cost} µcr, is beyond the ledger's range")
    return cost
