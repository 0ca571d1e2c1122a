"""Billing settings: LibreChat's flag rules and the default price."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from billing.settings import BillingSettings

pytestmark = pytest.mark.unit


def test_defaults() -> None:
    s = BillingSettings(_env_file=None)  # type: ignore[call-arg]
    assert s.balance_enabled and s.transactions_enabled
    assert s.start_balance == 100_000 and s.reservation_ttl_s == 900 and s.health_port == 8082
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/postgres" and s.batch_size <= 1000


def test_balance_forces_transactions_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_TRANSACTIONS_ENABLED", "false")
    assert BillingSettings().transactions_enabled
    monkeypatch.setenv("BILLING_BALANCE_ENABLED", "false")
    assert not BillingSettings().transactions_enabled


def test_database_url_from_either_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://a/b")
    assert BillingSettings().database_url == "postgresql://a/b"
    monkeypatch.setenv("BILLING_DATABASE_URL", "postgresql://c/d")
    assert BillingSettings().database_url == "postgresql://c/d"


@pytest.mark.parametrize("url", ["mysql://db/billing", "postgresql+psycopg://u@h/d", "file:///x.db", "not a url"])
def test_the_database_is_postgresql(url: str) -> None:
    """One engine everywhere: any other URL is refused when the settings are read, not at first use."""
    with pytest.raises(ValidationError, match=r"PostgreSQL|not a URL"):
        BillingSettings(database_url=url)
    assert BillingSettings(database_url="postgresql+asyncpg://u@h/d").database_url == "postgresql+asyncpg://u@h/d"


@pytest.mark.parametrize("price", ["0", "0.0000001", "x"])
def test_default_price_must_be_exact_and_positive(price: str) -> None:
    with pytest.raises(ValidationError):
        BillingSettings(default_price_input=price)
