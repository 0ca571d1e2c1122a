"""How the ledger behaves (from the settings), and its clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Policy:
    """Balance and transaction recording (as LibreChat: balance on forces transactions on), the start
    balance, auto-refill, and how long a reservation lives without a word from its run."""

    balance_enabled: bool
    transactions_enabled: bool
    start_balance: int  # µcr
    auto_refill_enabled: bool
    auto_refill_interval_s: int
    auto_refill_amount: int  # µcr
    reservation_ttl_s: float


def utcnow() -> datetime:
    return datetime.now(UTC)
