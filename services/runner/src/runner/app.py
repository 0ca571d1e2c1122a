"""Composition root: settings → NATS connection, provider clients, tools, the worker, the health server.

``create_app(settings)`` builds a :class:`RunnerApp`; ``python -m runner`` runs one and the integration
tests start one in-process (``async with create_app(settings): …``). Start opens, in order, the provider
clients, NATS (streams, the RUNS consumer, the cancel subscription) and the health server; stop drains
runs and closes them in reverse. The runner has no database and no Redis.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from types import TracebackType

from nats.aio.client import Client
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from contracts import Subjects
from servicekit.natsio import connect

from .agent import RunConfig
from .connections import load_connections
from .health import HealthServer
from .metrics import Metrics
from .providers import Provider, build_provider
from .settings import RunnerSettings
from .tools import ToolRegistry, builtin_registry
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
        self.connections = load_connections(settings.connections, os.environ if env is None else env)
        self.tools = tools or builtin_registry()
        # The process's provider (``setup_tracing``) unless a test brings its own.
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer("runner")
        self.runner_id = settings.runner_id or f"{socket.gethostname()}-{os.getpid()}"
        self.nc: Client | None = None
        self.worker: Worker | None = None
        self.health: HealthServer | None = None
        self._providers: dict[str, Provider] = {}
        self._stopping = False

    async def __aenter__(self) -> RunnerApp:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def ready(self) -> bool:
        return not self._stopping and self.nc is not None and self.nc.is_connected and self.worker is not None

    async def start(self) -> None:
        s = self.settings
        self._providers = {name: build_provider(c, s.provider_timeout_s) for name, c in self.connections.items()}
        self.nc = await connect(s.nats_url, name=f"runner-{self.runner_id}")
        self.worker = Worker(
            self.nc,
            self.subjects,
            connections=self.connections,
            providers=self._providers,
            tools=self.tools,
            metrics=self.metrics,
            concurrency=s.concurrency,
            config=RunConfig(heartbeat_s=s.heartbeat_s, default_max_steps=s.max_steps),
            runner_id=self.runner_id,
            ack_wait_s=s.ack_wait_s,
            max_ack_pending=s.max_ack_pending,
            publish_timeout_s=s.usage_publish_timeout_s,
            billing_timeout_s=s.billing_timeout_s,
            admission_wait_s=s.admission_wait_s,
            tracer=self.tracer,
        )
        await self.worker.start()
        if s.health_port:
            self.health = HealthServer(s.health_host, s.health_port, self.ready, self.metrics.render)
            await self.health.start()
        log.info("runner %s started (concurrency %d)", self.runner_id, s.concurrency)

    async def stop(self) -> None:
        """Drain: stop fetching, let runs finish up to ``drain_s``, cancel the rest, close."""
        self._stopping = True
        if self.worker is not None:
            await self.worker.stop(self.settings.drain_s)
            self.worker = None  # not ready any more
        if self.health is not None:
            await self.health.stop()
            self.health = None
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.drain()
        for provider in self._providers.values():
            await provider.close()
        self._providers = {}
        log.info("runner %s stopped", self.runner_id)


def create_app(
    settings: RunnerSettings,
    *,
    env: Mapping[str, str] | None = None,
    tools: ToolRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
) -> RunnerApp:
    """The runner for ``settings``. ``env`` (default: the process environment) holds the providers'
    standard variables and the keys named by ``RUNNER_CONNECTIONS``; ``tools`` replaces the built-ins."""
    return RunnerApp(settings, env=env, tools=tools, tracer_provider=tracer_provider)
