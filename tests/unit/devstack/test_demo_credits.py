"""``make run`` tops the demo user up to 10 M credits when less than half is left, never beyond."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from devstack import __main__ as devstack_main

pytestmark = pytest.mark.unit


class Admin:
    def __init__(self, balance: dict[str, Any]) -> None:
        self._balance = balance
        self.added: list[Decimal] = []

    def __enter__(self) -> Admin:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def balance(self, user_id: str) -> dict[str, Any]:
        return self._balance

    def add_credits(self, user_id: str, amount: Decimal) -> None:
        self.added.append(Decimal(amount))


@pytest.mark.parametrize(
    ("available", "added"),
    [
        ("0", ["10000000"]),
        ("4999999.5", ["5000000.5"]),  # exact: to 10 M, not 10 M more
        ("5000000", []),
        ("9877120", []),  # a restart with a few holds still reserved adds nothing
        ("20000000", []),
    ],
)
def test_topped_up_to_ten_million_when_less_than_half_is_left(
    monkeypatch: pytest.MonkeyPatch, available: str, added: list[str]
) -> None:
    admin = Admin({"enabled": True, "available": available})
    monkeypatch.setattr(devstack_main, "AdminClient", lambda url, token: admin)
    devstack_main.ensure_credits("http://gw", "token", "u_demo")
    assert admin.added == [Decimal(a) for a in added]


def test_nothing_when_balances_are_not_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    admin = Admin({"enabled": False, "available": "0"})
    monkeypatch.setattr(devstack_main, "AdminClient", lambda url, token: admin)
    devstack_main.ensure_credits("http://gw", "token", "u_demo")
    assert admin.added == []
