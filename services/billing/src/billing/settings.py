"""Billing settings (env prefix ``BILLING_``)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, shared


class BillingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///./.run/billing.db", validation_alias=shared("BILLING_", "DATABASE_URL")
    )
    migrate: bool = True
    balance_enabled: bool = True
    transactions_enabled: bool = True
    start_balance: int = Field(default=20_000, ge=0, description="credits granted on a user's first use")
    auto_refill_enabled: bool = False
    auto_refill_interval_s: int = Field(default=30 * 86400, ge=1)
    auto_refill_amount: int = Field(default=10_000, ge=0)
    pricing_file: str | None = None
    default_price_input: str = Field(default="6", description="USD/1M for models without a price")
    default_price_output: str = "6"
    reservation_ttl_s: float = Field(default=900.0, gt=0)
    batch_size: int = Field(default=512, ge=1)
    health_port: int = Field(default=8082, validation_alias=AliasChoices("BILLING_HEALTH_PORT", "health_port"))
    health_host: str = "0.0.0.0"

    @model_validator(mode="after")
    def _balance_forces_transactions(self) -> BillingSettings:
        # As LibreChat: a balance without a ledger would be unverifiable.
        if self.balance_enabled and not self.transactions_enabled:
            self.transactions_enabled = True
        return self
