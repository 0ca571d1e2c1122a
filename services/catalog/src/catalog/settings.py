"""Catalog settings (env prefix ``CATALOG_``; shared variables such as ``DATABASE_URL`` are read too)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.db import DEFAULT_URL, postgres_url
from servicekit.settings import ServiceSettings, shared


class CatalogSettings(ServiceSettings):
    """How one catalog process runs. Build it in ``__main__`` (never at import time)."""

    model_config = SettingsConfigDict(env_prefix="CATALOG_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default=DEFAULT_URL,
        validation_alias=shared("CATALOG_", "DATABASE_URL"),
        description="PostgreSQL (tables in schema `catalog`, so it may share a database with billing)",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=shared("CATALOG_", "REDIS_URL"),
        description="optional answer cache; unset: run uncached",
    )
    redis_connect_timeout_s: float = Field(
        default=0.1,
        gt=0,
        validation_alias=shared("CATALOG_", "REDIS_CONNECT_TIMEOUT_S"),
        description="a connection to Redis not made within it: uncached",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        validation_alias=shared("CATALOG_", "REDIS_TIMEOUT_S"),
        description="every Redis call (connect included) ends within it, well under a gateway's RPC timeout",
    )
    redis_cooldown_s: float = Field(
        default=0.5,
        gt=0,
        validation_alias=shared("CATALOG_", "REDIS_COOLDOWN_S"),
        description="after a failed Redis call, no call for this long; then one probe (doubling while it fails)",
    )
    redis_max_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=shared("CATALOG_", "REDIS_MAX_COOLDOWN_S"),
        description="the longest cool-down between probes",
    )
    migrate_on_start: bool = Field(
        default=True,
        validation_alias=AliasChoices("CATALOG_MIGRATE_ON_START", "CATALOG_MIGRATE", "migrate_on_start"),
        description="run the Alembic migrations at start-up (make run, compose); false in production, where "
        "`python -m catalog migrate` runs once before (the chart's hook Job) and the service waits for its schema",
    )
    health_port: int = Field(default=8081, ge=0, le=65535, description="/healthz, /readyz, /metrics; 0 disables")
    health_host: str = Field(default="0.0.0.0")
    cache_ttl_s: float = Field(default=30.0, gt=0, description="Redis TTL of cached verify-key/agent-access answers")
    reply_cache_ttl_s: float = Field(default=5.0, ge=0, description="how long a gateway may reuse an answer")
    last_used_interval_s: float = Field(default=60.0, ge=0, description="write a key's last_used_at at most this often")
    last_used_flush_s: float = Field(default=2.0, gt=0, description="how often pending last_used_at writes go out")
    workers: int = Field(default=16, ge=1, description="concurrent requests per subscriber")

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, value: str) -> str:
        return postgres_url(value)

    @model_validator(mode="after")
    def _cooldowns(self) -> CatalogSettings:
        if self.redis_max_cooldown_s < self.redis_cooldown_s:
            raise ValueError("REDIS_MAX_COOLDOWN_S must be at least REDIS_COOLDOWN_S")
        return self
