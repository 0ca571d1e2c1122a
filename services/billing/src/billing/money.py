"""Exact money. Pure: no I/O, no framework.

Units. Prices are USD per million tokens; balances are credits, 1,000,000 credits = 1 USD — so a
token priced at P USD/1M costs exactly P credits. Everything is stored and summed as integers of
**micro-credits** (1 credit = 1,000,000 µcr) in BIGINT columns, which PostgreSQL adds exactly and
fast (a float is never acceptable for money).

Precision rule: a price may have at most 6 decimal places (USD per 1M tokens, i.e. 1e-12 USD per
token). A price is then an integer number of µcr per token, and every cost — tokens x prices — an
exact integer of µcr: no rounding happens anywhere. Finer prices are refused (400).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Context, Decimal, InvalidOperation
from typing import Protocol

MICRO = 1_000_000
#: The largest amount a BIGINT column holds, in micro-units (about 9.2 x 10^12 credits).
MAX_MICRO = 2**63 - 1
_QUANTUM = Decimal(1).scaleb(-6)
#: Enough precision for any value that passed the size check (20 integer digits + 6 decimals).
_EXACT = Context(prec=40)


class MoneyError(ValueError):
    """An amount or price that cannot be represented exactly."""


def to_micro(value: Decimal | int | str, *, what: str = "amount") -> int:
    """Credits (or USD/1M for a price) → integer micro-units, refusing floats, sub-micro precision and
    amounts no BIGINT holds (checked on the exponent first: ``int()`` of a 100,000-digit number would
    hold the event loop for a while, and ``Decimal`` arithmetic rounds beyond 28 digits)."""
    if isinstance(value, float):
        raise MoneyError(f"{what} must be a decimal string or an integer, not a float")
    try:
        d = Decimal(value)
    except (InvalidOperation, TypeError) as exc:
        raise MoneyError(f"{what} is not a number: {_short(value)!r}") from exc
    if not d.is_finite():
        raise MoneyError(f"{what} must be finite")
    if d and d.adjusted() > 13:  # ≥ 10^14: beyond a BIGINT of micro-units whatever the digits
        raise MoneyError(f"{what} is too large")
    _, digits, exponent = d.as_tuple()
    if isinstance(exponent, int) and exponent < -6 and any(digits[exponent + 6 :]):
        raise MoneyError(f"{what} has more than 6 decimal places: {_short(value)}")
    micro = int(d.scaleb(6, _EXACT).to_integral_value())
    if abs(micro) > MAX_MICRO:
        raise MoneyError(f"{what} is too large")
    return micro


def _short(value: object) -> str:
    """``value`` for an error message: an attacker's megabyte of digits is not echoed back."""
    text = str(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def from_micro(micro: int) -> Decimal:
    """Integer micro-units → an exact Decimal of credits (or USD/1M), without trailing zeros beyond 6 places."""
    d = (Decimal(micro) / MICRO).quantize(_QUANTUM)
    # normalize() would write 20000 as 2E+4: strip trailing zeros only from the fraction
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d.normalize()


class TokenCounts(Protocol):
    """A call's tokens as billed (``contracts.TokenUsage``, or a ledger row that recorded them)."""

    @property
    def input_tokens(self) -> int: ...
    @property
    def cache_write_tokens(self) -> int: ...
    @property
    def cache_read_tokens(self) -> int: ...
    @property
    def output_tokens(self) -> int: ...


@dataclass(frozen=True)
class Price:
    """One model's prices in µcr per token (= USD/1M x 10^6). Cache prices already fell back to input."""

    key: str
    input: int
    output: int
    cache_write: int
    cache_read: int

    def cost(
        self, *, input_tokens: int, output_tokens: int, cache_write_tokens: int = 0, cache_read_tokens: int = 0
    ) -> int:
        """The exact cost in µcr — the one formula of a call's cost: what the ledger charges, what
        admission reserves (:meth:`worst_case`: every prompt token at the dearest of its three prices)
        and what ``billing reconcile`` checks every entry against. ``input_tokens`` are the uncached
        ones; reasoning is inside ``output_tokens``."""
        return (
            input_tokens * self.input
            + cache_write_tokens * self.cache_write
            + cache_read_tokens * self.cache_read
            + output_tokens * self.output
        )

    def charge(self, tokens: TokenCounts) -> int:
        """:meth:`cost` of a call's tokens."""
        return self.cost(
            input_tokens=tokens.input_tokens,
            output_tokens=tokens.output_tokens,
            cache_write_tokens=tokens.cache_write_tokens,
            cache_read_tokens=tokens.cache_read_tokens,
        )

    @property
    def prompt_ceiling(self) -> int:
        """The most a prompt token can be billed at: the provider decides whether it is read as input,
        written to its cache (Anthropic's cache write is 1.25x input) or read from it."""
        return max(self.input, self.cache_write, self.cache_read)

    def worst_case(self, prompt_tokens: int, max_output_tokens: int) -> int:
        """What admission, an extension and a hold made ahead reserve: the whole prompt at the highest
        price a prompt token can be billed at (:attr:`prompt_ceiling`) plus the maximum output — so no
        split of the prompt into uncached, cache-write and cache-read tokens costs more."""
        return prompt_tokens * self.prompt_ceiling + max_output_tokens * self.output
