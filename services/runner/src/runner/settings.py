"""Runner settings (env prefix ``RUNNER_``; shared variables such as ``NATS_URL`` are read too)."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings


class RunnerSettings(ServiceSettings):
    """How one runner process runs. Build it in ``__main__`` (never at import time)."""

    model_config = SettingsConfigDict(env_prefix="RUNNER_", extra="ignore", populate_by_name=True)

    concurrency: int = Field(
        default=1024,
        ge=1,
        description="runs executed at once by this worker at most: streams wait on providers, so this is high and "
        "the CPU limits (RUNNER_BUSY_LAG_S)",
    )
    busy_lag_s: float = Field(
        # 50 ms engaged under ordinary load on a shared 2-core machine and queued runs behind a runner
        # that still had room (realistic-load TTFT p99 157-186 ms against 76-97 ms without it, same
        # session); a loop 200 ms late is one that is really overloaded (docs/performance.md).
        default=0.2,
        ge=0,
        description="while the event loop lags more than this, the runner takes no new runs (0: slots alone decide)",
    )
    heartbeat_s: float = Field(default=2.0, gt=0, description="send a heartbeat after this long without an event")
    gateway_lost_s: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="a gateway heard and then silent this long is dead: the runs whose client waited there are "
        "cancelled, billed for what they did (0: never)",
    )
    fleet_heartbeat_s: float = Field(
        default=1.0,
        gt=0,
        le=10,
        description="how often the runner tells the fleet it is alive and how far its runs have got "
        "(billing and gateways take it for dead after a few seconds of silence)",
    )
    max_steps: int = Field(default=10, ge=1, description="model calls per run unless the agent or request says")
    drain_s: float = Field(default=30.0, ge=0, description="on SIGTERM, how long running runs may finish")
    ack_wait_s: float = Field(default=300.0, gt=0, description="RUNS consumer ack wait (we ack at start anyway)")
    billing_timeout_s: float = Field(default=2.0, gt=0, description="reservation-extension request timeout")
    admission_wait_s: float = Field(
        default=10.0, gt=0, description="how long a run published before its admission waits for the go-ahead"
    )
    usage_publish_timeout_s: float = Field(default=5.0, gt=0, description="one USAGE publish attempt's ack timeout")
    provider_timeout_s: float = Field(default=600.0, gt=0, description="provider HTTP read timeout")
    connections: str = Field(
        default="",
        description='extra provider connections, JSON {"name": {"kind", "base_url", "api_key_env"}}',
    )
    mcp_servers: str = Field(
        default="",
        description='MCP servers whose tools agents may use, JSON {"name": {"url": "http://…/mcp", "headers": {…}, '
        '"timeout_s": 30}}; a header value may name ${VAR} (from the environment) and {{user_id}} (the caller)',
    )
    mcp_servers_file: str = Field(default="", description="a file holding the same JSON as RUNNER_MCP_SERVERS")
    mcp_tools_ttl_s: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="how long an MCP server's tool list is reused before it is listed again",
    )
    mcp_max_result_chars: int = Field(
        default=100_000, ge=1000, le=10_000_000, description="an MCP tool's result is cut to this many characters"
    )
    runner_id: str = Field(
        default="",
        description="this worker's name in RunStarted and its fleet heartbeat; unique to each start "
        "(default: host, pid and a random suffix)",
    )
    capture_message_content: str = Field(
        default="",
        validation_alias=AliasChoices(
            "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT",
            "RUNNER_CAPTURE_MESSAGE_CONTENT",
            "capture_message_content",
        ),
        max_length=32,
        description="true: trace spans carry message content (prompts, answers, tool arguments and results); "
        "unset or false: they never do",
    )
    health_port: int = Field(default=8083, ge=0, le=65535, description="/healthz, /readyz, /metrics; 0 disables")
    health_host: str = Field(default="0.0.0.0")
    max_ack_pending: int = Field(default=4096, ge=1, description="RUNS consumer max ack pending (≥ total concurrency)")
    take_offers: bool = Field(
        default=True,
        description="take runs a gateway offers straight to a runner with a free slot (core NATS, one hop) as well as "
        "from the RUNS queue (false: the queue alone)",
    )
    pull_window: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="runs asked of the RUNS queue at a time, however many slots are free: new work is shared "
        "among runners as it arrives instead of filling the one that asked first",
    )
