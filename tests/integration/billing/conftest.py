"""A billing service in-process against the test's own PostgreSQL database and NATS namespace."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from billing.app import BillingApp
from billing.settings import BillingSettings

from .helpers import Books


@pytest.fixture
def billing_settings(nats_url: str, namespace: str, database_url: str) -> Callable[..., BillingSettings]:
    def make(**overrides: Any) -> BillingSettings:
        values: dict[str, Any] = {
            "nats_url": nats_url,
            "nats_namespace": namespace,
            "database_url": database_url,
            "health_port": 0,
            "start_balance": 0,
            "usage_retry_delay_s": 0.1,
            **overrides,
        }
        return BillingSettings(**values)

    return make


@pytest.fixture
async def billing(billing_settings: Callable[..., BillingSettings], nats_client) -> AsyncIterator[BillingApp]:  # type: ignore[no-untyped-def]
    app = BillingApp(billing_settings())
    async with app.running():
        yield app
        assert app.consumer is not None and not app.consumer.crashed


@pytest.fixture
async def books(database_url: str) -> AsyncIterator[Books]:
    b = Books(database_url)
    yield b
    await b.close()
