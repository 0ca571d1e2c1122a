"""Billing settings (env prefix ``BILLING_``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.db import DEFAULT_URL, postgres_url
from servicekit.settings import ServiceSettings, shared

from .money import to_micro


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_URL,
        validation_alias=shared("BILLING_", "DATABASE_URL"),
        description="PostgreSQL (tables in schema `billing`, so it may share a database with the catalog)",
    )
    migrate_on_start: bool = Field(
        default=True,
        validation_alias=AliasChoices("BILLING_MIGRATE_ON_START", "BILLING_MIGRATE", "migrate_on_start"),
        description="run the Alembic migrations at start-up (make run, compose); false in production, where "
        "`python -m billing migrate` runs once before (the chart's hook Job) and the service waits for its schema",
    )
    balance_enabled: bool = True
    transactions_enabled: bool = True
    start_balance: int = Field(
        default=100_000,
        ge=0,
        description="credits granted on a user's first use: enough for the worst case of an ordinary first request "
        "(4,096 output tokens at the default price of 6 USD per million, and a few thousand prompt tokens)",
    )
    auto_refill_enabled: bool = False
    auto_refill_interval_s: int = Field(default=30 * 86400, ge=1)
    auto_refill_amount: int = Field(default=10_000, ge=0)
    pricing_file: str | None = None
    default_price_input: str = Field(default="6", description="USD/1M for models without a price (as LibreChat)")
    default_price_output: str = "6"
    reservation_ttl_s: float = Field(default=900.0, gt=0)
    runner_lost_s: float = Field(
        default=3.0,
        gt=0,
        description="a runner silent this long (its fleet heartbeat) is dead: its calls in flight are billed "
        "from its last heartbeat and its runs closed, releasing their reservations",
    )
    db_pool_size: int = Field(
        default=20, ge=1, le=500, description="database connections kept open (admissions beyond it wait for one)"
    )
    batch_size: int = Field(default=1000, ge=1, le=1000, description="USAGE messages per fetch and transaction")
    usage_ack_wait_s: float = Field(
        default=60.0, gt=0, description="JetStream redelivers an unacked message after this"
    )
    usage_retry_delay_s: float = Field(default=1.0, gt=0, description="nak delay after a failed batch")
    usage_linger_s: float = Field(
        default=0.1,
        ge=0,
        le=5,
        description="how long a usage batch waits to fill once its first record is in: fewer, larger "
        "batches cost less and hold the account rows (which every admission updates) less often",
    )
    health_port: int = Field(default=8082, validation_alias=AliasChoices("BILLING_HEALTH_PORT", "health_port"))
    health_host: str = "0.0.0.0"

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        return postgres_url(value)

    @field_validator("default_price_input", "default_price_output")
    @classmethod
    def _exact_positive_price(cls, value: str) -> str:
        if to_micro(value, what="default price") <= 0:
            raise ValueError("the default price must be above zero")
        return value

    @model_validator(mode="after")
    def _balance_forces_transactions(self) -> BillingSettings:
        # As LibreChat: a balance without a ledger would be unverifiable.
        if self.balance_enabled and not self.transactions_enabled:
            self.transactions_enabled = True
        return self
