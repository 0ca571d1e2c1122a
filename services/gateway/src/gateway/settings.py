"""Gateway settings (env prefix ``GATEWAY_``; shared variables such as ``NATS_URL`` and ``REDIS_URL`` too)."""

from __future__ import annotations

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, shared

#: Admin tokens that must never guard a production gateway (examples and documentation values).
KNOWN_DEFAULT_ADMIN_TOKENS = frozenset({"changeme", "change-me", "admin", "secret", "dev-admin-token", "admin-token"})
MIN_ADMIN_TOKEN_LENGTH = 24


class GatewaySettings(ServiceSettings):
    """Everything the gateway process reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    host: str = Field(default="127.0.0.1", description="containers set 0.0.0.0")
    port: int = Field(default=8080, ge=0, le=65535)
    admin_token: str | None = Field(
        default=None, validation_alias=AliasChoices("GATEWAY_ADMIN_TOKEN", "ADMIN_TOKEN", "admin_token")
    )
    queue_timeout_s: float = Field(default=10.0, gt=0, description="no `started` event within it: 503")
    max_in_flight: int = Field(
        default=10_000, ge=1, description="API requests handled at once (open streams included): 503 above"
    )
    max_runs_starting: int = Field(
        default=1_000, ge=1, description="runs waiting for a runner at once: 503 with Retry-After above"
    )
    runner_lost_s: float = Field(
        default=3.0, gt=0, description="a runner heard from and then silent this long is lost: its streams fail"
    )
    heartbeat_s: float = Field(
        default=1.0,
        gt=0,
        le=30,
        description="a heartbeat on gateway.heartbeat.v1 this often: runners cancel the runs of a gateway they "
        "no longer hear (RUNNER_GATEWAY_LOST_S)",
    )
    idle_timeout_s: float = Field(default=15.0, gt=0, description="no event at all within it: the stream ends")
    stream_buffer_bytes: int = Field(
        default=1024 * 1024,
        ge=4096,
        le=1024 * 1024 * 1024,
        description="a stream's events waiting for a client that reads slowly, at most: past it the run is cancelled "
        "(billed for what it did) and the stream ends with a slow_client error",
    )
    default_max_output_tokens: int = Field(default=4096, ge=1)
    default_rate_limit_per_minute: int = Field(default=600, ge=1)
    auth_cache_ttl_s: float = Field(default=5.0, ge=0)
    auth_stale_s: float = Field(
        default=300.0,
        ge=0,
        description="a key's or an agent's positive answer is served this long past its expiry while the catalog "
        "cannot be reached (revocations still apply at once, and a key is never used past its own expires_at)",
    )
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    admin_max_body_bytes: int = Field(default=1024 * 1024, ge=1, description="admin API request bodies: 413 above")
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="request line and headers: 431 above")
    header_timeout_s: float = Field(default=10.0, gt=0, description="a request's headers must arrive within it: 408")
    body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="a request's whole body must arrive within it, from when the gateway starts reading it: 408",
    )
    redis_url: str | None = Field(default=None, validation_alias=shared("GATEWAY_", "REDIS_URL"))
    redis_connect_timeout_s: float = Field(
        default=0.1,
        gt=0,
        validation_alias=shared("GATEWAY_", "REDIS_CONNECT_TIMEOUT_S"),
        description="a connection to Redis not made within it: limits per process",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        validation_alias=shared("GATEWAY_", "REDIS_TIMEOUT_S"),
        description="every rate-limit call to Redis (connect included) ends within it",
    )
    redis_cooldown_s: float = Field(
        default=0.5,
        gt=0,
        validation_alias=shared("GATEWAY_", "REDIS_COOLDOWN_S"),
        description="after a failed Redis call, no call for this long; then one probe (doubling while it fails)",
    )
    redis_max_cooldown_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias=shared("GATEWAY_", "REDIS_MAX_COOLDOWN_S"),
        description="the longest cool-down between probes",
    )
    rpc_timeout_s: float = Field(default=2.0, gt=0, description="catalog and billing request/reply timeout")
    offer_runs: bool = Field(
        default=True,
        description="offer each run straight to a runner with a free slot (one core NATS hop) before the RUNS queue "
        "(false: every run is queued)",
    )
    nats_reconnect_wait_s: float = Field(
        default=5.0, ge=0, description="while NATS reconnects (a restart), a new request waits this long for it"
    )
    access_log: bool = Field(default=False)
    drain_timeout_s: float = Field(default=20.0, ge=0, description="SIGTERM: how long open streams may finish")
    accept_grace_s: float = Field(
        default=0.0,
        ge=0,
        le=300,
        description="SIGTERM: how long new requests are still served (with /readyz already 503) before the "
        "listener closes, so a load balancer polling readiness stops routing here first (Kubernetes: preStop does it)",
    )
    preadmit_runs: int = Field(
        default=4, ge=0, le=16, description="runs kept admitted ahead per active user and agent (0: none)"
    )
    preadmit_max_runs: int = Field(
        default=64,
        ge=1,
        le=64,
        description="at most this many when the user's requests outrun them (one more kept for each request "
        "that finds none left, half as many when some go unused or are refused)",
    )
    preadmit_max_age_s: float = Field(default=30.0, gt=0, description="an unused run admitted ahead is handed back")
    responses_ttl_s: float = Field(
        default=30 * 24 * 3600.0,
        ge=60,
        description="how long a stored Responses API response is kept (the RESPONSES object store's TTL)",
    )
    responses_replicas: int | None = Field(
        default=None, ge=1, le=5, description="replicas of the RESPONSES object store (unset: NATS_STREAM_REPLICAS)"
    )
    responses_store_timeout_s: float = Field(
        default=5.0, gt=0, description="every read or write of a stored response ends within it"
    )
    responses_max_background: int = Field(
        default=1_000, ge=1, description="background responses this gateway carries at once: 503 above"
    )
    resume_window_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="a streamed run with an Idempotency-Key whose client left goes on this long for the client to "
        "resume it (on any replica); then it is cancelled",
    )
    idempotency_ttl_s: float = Field(
        default=24 * 3600.0,
        ge=60,
        description="how long an Idempotency-Key is remembered (the IDEMPOTENCY bucket's TTL)",
    )
    idempotency_replicas: int | None = Field(
        default=None,
        ge=1,
        le=5,
        description="replicas of the IDEMPOTENCY key-value bucket and results store (unset: NATS_STREAM_REPLICAS)",
    )
    idempotency_timeout_s: float = Field(
        default=2.0, gt=0, description="every read or write of an Idempotency-Key entry ends within it"
    )

    @property
    def responses_store_replicas(self) -> int:
        """Replicas of the RESPONSES object store: its own setting, else ``NATS_STREAM_REPLICAS``."""
        return self.responses_replicas or self.nats_stream_replicas

    @property
    def idempotency_store_replicas(self) -> int:
        """Replicas of the IDEMPOTENCY bucket and results store: their own setting, else ``NATS_STREAM_REPLICAS``."""
        return self.idempotency_replicas or self.nats_stream_replicas

    @model_validator(mode="after")
    def _cooldowns(self) -> GatewaySettings:
        if self.redis_max_cooldown_s < self.redis_cooldown_s:
            raise ValueError("REDIS_MAX_COOLDOWN_S must be at least REDIS_COOLDOWN_S")
        return self

    @model_validator(mode="after")
    def _refuse_weak_admin_token_in_production(self) -> GatewaySettings:
        if self.environment == "production":
            token = self.admin_token or ""
            if len(token) < MIN_ADMIN_TOKEN_LENGTH or token.lower() in KNOWN_DEFAULT_ADMIN_TOKENS:
                raise ValueError(
                    f"ADMIN_TOKEN must be set to a random secret of at least {MIN_ADMIN_TOKEN_LENGTH} "
                    "characters in production"
                )
        return self
