"""Settings every service has. Each service subclasses :class:`ServiceSettings` with its own env prefix.

Shared variables (``NATS_URL``, ``DATABASE_URL``, ``REDIS_URL`` …) are read unprefixed too, so one
environment configures a whole stack; a prefixed one (``CATALOG_DATABASE_URL``) wins.
"""

from __future__ import annotations

from typing import Literal, TypedDict
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts import Subjects
from contracts.permissions import inbox_prefix


def shared(prefix: str, name: str) -> AliasChoices:
    """Accept ``{PREFIX}{NAME}`` first, then the unprefixed ``{NAME}``."""
    return AliasChoices(f"{prefix}{name}", name)


class NatsCredentials(TypedDict, total=False):
    """A NATS user's name and password, and the inbox prefix its permissions allow, as the client's
    ``connect`` takes them."""

    user: str
    password: str
    inbox_prefix: str


class ServiceSettings(BaseSettings):
    """Base settings. Subclasses set ``model_config = SettingsConfigDict(env_prefix="X_")`` and may
    re-declare a field with ``validation_alias=shared("X_", "NAME")``."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    nats_url: str = Field(default="nats://127.0.0.1:4222", validation_alias=AliasChoices("NATS_URL", "nats_url"))
    nats_user: str = Field(
        default="",
        validation_alias=AliasChoices("NATS_USER", "nats_user"),
        description="the service's NATS user (with NATS_PASSWORD); empty: none, or the one NATS_URL carries",
    )
    nats_password: SecretStr = Field(
        default=SecretStr(""), validation_alias=AliasChoices("NATS_PASSWORD", "nats_password"), repr=False
    )
    nats_namespace: str = Field(
        default="",
        validation_alias=AliasChoices("SWITCHBOARD_NAMESPACE", "nats_namespace"),
        description="prefix of every subject and stream name; lets several stacks share one NATS",
    )
    nats_stream_replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        validation_alias=AliasChoices("NATS_STREAM_REPLICAS", "nats_stream_replicas"),
        description="replicas of every JetStream stream, key-value bucket and object store a service creates: "
        "1 on a single NATS server, 3 on a three-node cluster (at most the cluster's size)",
    )
    environment: Literal["development", "production"] = Field(
        default="development", validation_alias=AliasChoices("SWITCHBOARD_ENV", "environment")
    )
    log_level: str = Field(default="INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("OTEL_EXPORTER_OTLP_ENDPOINT", "otlp_endpoint"),
        description="OTLP/HTTP collector (Jaeger: http://jaeger:4318); unset: no export",
    )

    @property
    def nats_service(self) -> str:
        """The service's name, from its settings' prefix (``GATEWAY_`` → ``gateway``)."""
        return str(self.model_config.get("env_prefix") or "").rstrip("_").lower()

    def nats_credentials(self) -> NatsCredentials:
        """``user`` and ``password`` for the NATS client when ``NATS_USER`` is set (they win over any
        in ``NATS_URL``), and the service's own inbox prefix (its user may read no other replies than
        those: :func:`contracts.permissions.inbox_prefix`); else nothing. Never logged."""
        if not self.nats_user:
            return {}
        return {
            "user": self.nats_user,
            "password": self.nats_password.get_secret_value(),
            "inbox_prefix": inbox_prefix(Subjects(self.nats_namespace), self.nats_service),
        }

    def nats_servers(self) -> list[str]:
        """The server URLs of ``NATS_URL`` (comma-separated); with ``NATS_USER`` set, without any
        credentials a URL carries (a client given both may refuse them)."""
        urls = [u.strip() for u in self.nats_url.split(",") if u.strip()]
        if not self.nats_user:
            return urls
        out = []
        for url in urls:
            parts = urlsplit(url)
            host = parts.netloc.rpartition("@")[2]
            out.append(urlunsplit(parts._replace(netloc=host)))
        return out
