"""Composition root: settings → NATS connection, provider clients, tools, the worker, the health server.

``create_app(settings)`` builds a :class:`RunnerApp`; ``python -m runner`` runs one and the integration
tests start one in-process (``async with create_app(settings): …``). Start opens, in order, the health
server (so ``/healthz`` answers through start-up), the provider clients and NATS (streams, the RUNS
consumer, the cancel subscription), then the fleet heartbeat (:mod:`runner.fleet`); stop drains runs
(heartbeats go on meanwhile), sends a last, empty heartbeat and closes the rest in reverse. The runner
has no database and no Redis: ``/readyz`` checks NATS only (:mod:`servicekit.health`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Mapping
from types import TracebackType

from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from contracts import Subjects
from servicekit.health import Health, HealthServer, nats_answers
from servicekit.natsio import connect

from .agent import RunConfig
from .backpressure import LoopLag
from .connections import load_connections
from .fleet import Heartbeat
from .genai import capture_enabled
from .metrics import Metrics
from .providers import Provider, build_provider
from .settings import RunnerSettings
from .tools import ToolRegistry, builtin_registry
from .tools.mcp import McpToolbox, load_mcp_servers
from .worker import Worker

log = logging.getLogger(__name__)


class RunnerApp:
    """One runner process's resources and their lifetime."""

    def __init__(
        self,
        settings: RunnerSettings,
        env: Mapping[str, str] | None = None,
        tools: ToolRegistry | None = None,
        tracer_provider: TracerProvider | None = None,
    ) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.nats_namespace)
        self.metrics = Metrics()
        # Connections come from configuration only; keys never leave this process.
        environ = os.environ if env is None else env
        self.connections = load_connections(settings.connections, environ)
        # MCP servers too: their headers (credentials) stay in this process.
        servers = load_mcp_servers(settings.mcp_servers, settings.mcp_servers_file, environ)
        self.mcp = McpToolbox(
            servers, tools_ttl_s=settings.mcp_tools_ttl_s, max_result_chars=settings.mcp_max_result_chars
        )
        self.tools = tools or builtin_registry(self.mcp)
        # The process's provider (``setup_tracing``) unless a test brings its own.
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("runner")
        # Unique to this start: a container restarted in the same pod has the same host name and pid,
        # and a dead runner's id heard again would hide its death from billing and the gateways.
        self.runner_id = settings.runner_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.nc: Client | None = None
        self.worker: Worker | None = None
        self.heartbeat: Heartbeat | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._replaying: asyncio.Task[int] | None = None
        self.health = Health({"nats": lambda: nats_answers(self.nc)}, metrics=self.metrics.render)
        self._health_server: HealthServer | None = None
        self._providers: dict[str, Provider] = {}

    async def __aenter__(self) -> RunnerApp:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def ready(self) -> bool:
        """Serving (started, not draining) and connected to NATS."""
        return self.health.phase == "serving" and self.nc is not None and self.nc.is_connected

    async def start(self) -> None:
        """Open everything; on a failure (or a cancelled start-up), close what was opened."""
        try:
            await self._start()
        except BaseException:
            self.worker = None  # never started: nothing of its own to drain (nc.drain ends its subscriptions)
            await self.stop()
            raise

    async def _start(self) -> None:
        s = self.settings
        if s.health_port:
            self._health_server = HealthServer(self.health, s.health_host, s.health_port)
            await self._health_server.start()
        self._providers = {name: build_provider(c, s.provider_timeout_s) for name, c in self.connections.items()}

        async def on_reconnected() -> None:
            # Events published while NATS came back may have reached nobody: send recent ones again.
            if self.worker is not None:
                self._replaying = asyncio.create_task(self.worker.replay_events(), name="runner-event-replay")

        def on_nats_error(error: Exception) -> None:
            if self.worker is not None:
                self.worker.heard(error)

        self.nc = await connect(
            s.nats_url,
            name=f"runner-{self.runner_id}",
            on_reconnected=on_reconnected,
            on_error=on_nats_error,
            **s.nats_credentials(),
        )
        self.worker = Worker(
            self.nc,
            self.subjects,
            connections=self.connections,
            providers=self._providers,
            tools=self.tools,
            metrics=self.metrics,
            concurrency=s.concurrency,
            config=RunConfig(
                heartbeat_s=s.heartbeat_s,
                default_max_steps=s.max_steps,
                capture_content=capture_enabled(s.capture_message_content),
            ),
            runner_id=self.runner_id,
            ack_wait_s=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            pull_window=s.pull_window,
            take_offers=s.take_offers,
            publish_timeout_s=s.usage_publish_timeout_s,
            billing_timeout_s=s.billing_timeout_s,
            admission_wait_s=s.admission_wait_s,
            gateway_lost_s=s.gateway_lost_s,
            stream_replicas=s.nats_stream_replicas,
            tracer=self.tracer,
        )
        if s.busy_lag_s > 0:
            self.worker.lag = LoopLag(busy_s=s.busy_lag_s, on_free=self.worker.refill)
            self._lag_task = asyncio.create_task(self.worker.lag.run(), name="runner-loop-lag")
        await self.worker.start()
        self.heartbeat = Heartbeat(
            self.nc,
            self.subjects.runner_heartbeat,
            self.runner_id,
            s.fleet_heartbeat_s,
            self.worker.progress,
            connections=list(self.connections),
            tools=self.tools.names(),
            mcp_servers=self.mcp.announce,
        )
        self.mcp.start()
        self.heartbeat.start()
        self.health.phase = "serving"
        log.info("runner %s started (concurrency %d)", self.runner_id, s.concurrency)

    async def stop(self) -> None:
        """Drain: stop fetching, let runs finish up to ``drain_s``, cancel the rest, close."""
        self.health.phase = "draining"
        if self._lag_task is not None:
            self._lag_task.cancel()
            self._lag_task = None
        if self.worker is not None:
            await self.worker.stop(self.settings.drain_s)  # the heartbeat goes on while runs drain
            self.worker = None
        if self.heartbeat is not None:
            await self.heartbeat.stop()
            self.heartbeat = None
        # After the drain: runs still going used their MCP sessions until now.
        await self.mcp.close()
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        for provider in self._providers.values():
            await provider.close()
        self._providers = {}
        if self._health_server is not None:
            await self._health_server.stop()
            self._health_server = None
        log.info("runner %s stopped", self.runner_id)


def create_app(
    settings: RunnerSettings,
    *,
    env: Mapping[str, str] | None = None,
    tools: ToolRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> RunnerApp:
    """The runner for ``settings``. ``env`` (default: the process environment) holds the providers'
    standard variables, the keys named by ``RUNNER_CONNECTIONS`` and the variables MCP servers' headers
    name; ``tools`` replaces the built-ins (and the MCP servers)."""
    return RunnerApp(settings, env=env, tools=tools, tracer_provider=tracer_provider)
