"""Catalog settings (env prefix ``CATALOG_``; shared variables such as ``DATABASE_URL`` are read too)."""

from __future__ import annotations

from pydantic import Field, field_validator
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
    migrate: bool = Field(default=True, description="run the Alembic migrations at start-up")
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
