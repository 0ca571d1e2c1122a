"""Composition root: :func:`create_app` wires settings → NATS broker, database, Redis, the service.

:meth:`CatalogRuntime.lifespan` opens NATS, the database (migrating it first when asked) and Redis in
that order and closes them in reverse. :meth:`CatalogRuntime.running` is the whole process: the
health port (:mod:`servicekit.health`, the body every service answers: NATS and the database decide
readiness; Redis is optional, a cache the catalog answers without), the lifespan and the subscribers.
``python -m catalog`` runs it with :func:`servicekit.runtime.run_service`, as every service runs, rather
than with FastStream's own application runner, so that its start-up, signals and health port are the
other services' too; the broker, its subscribers and their ``Context`` are FastStream's.

A Redis that refuses, hangs or answers slowly costs a request at most ``CATALOG_REDIS_TIMEOUT_S``, and
nothing while the cache's circuit breaker is open (:mod:`catalog.cache`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from faststream.nats.security import NatsUserPassword
from redis.asyncio import Redis

from contracts import AdminRequest, CacheInvalidated, Subjects
from servicekit.breaker import CircuitBreaker
from servicekit.health import Check, Health, nats_answers, serving_health
from servicekit.natsio import trace_headers, wait_until_answering
from servicekit.redisio import redis_client

from .cache import AnswerCache
from .db import migrate, open_engine, wait_for_schema
from .handlers import register
from .lastused import LastUsedRecorder
from .metrics import Metrics
from .repository import Repository
from .service import CatalogService
from .settings import CatalogSettings

log = logging.getLogger(__name__)


class CatalogRuntime:
    """One catalog process's resources, opened and closed by :meth:`lifespan`."""

    def __init__(self, settings: CatalogSettings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.nats_namespace)
        self.metrics = Metrics()
        self.broker = NatsBroker(
            settings.nats_servers(),
            name="catalog",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=5,
            # Per-message "Received/Processed" lines would cost more than the answers themselves.
            log_level=logging.DEBUG,
            # Continues the caller's trace (W3C traceparent header) in a consumer span per request.
            middlewares=[NatsTelemetryMiddleware(include_messages_counters=False)],
            security=(
                NatsUserPassword(settings.nats_user, settings.nats_password.get_secret_value())
                if settings.nats_user
                else None
            ),
            # Its user reads replies under its own inbox prefix only.
            inbox_prefix=settings.nats_credentials().get("inbox_prefix", "_INBOX"),
        )
        register(self.broker, self.subjects, workers=settings.workers)
        self.redis: Redis | None = None
        self.cache: AnswerCache | None = None
        self.repo: Repository | None = None
        self.service: CatalogService | None = None
        optional: dict[str, Check] = {"redis": self._redis_answers} if settings.redis_url else {}
        self.health = Health(
            {"nats": self._nats_answers, "database": self._database_answers},
            optional=optional,
            metrics=self.metrics.render,
        )

    async def _publish(self, event: CacheInvalidated) -> None:
        await self.broker.publish(
            event.model_dump_json().encode(), self.subjects.catalog_invalidated, headers=trace_headers()
        )

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        s = self.settings
        await self.broker.connect()
        try:
            if s.migrate_on_start:
                await migrate(s.database_url)
            else:
                await wait_for_schema(s.database_url, self._report_schema)
            engine = open_engine(s.database_url)
            try:
                self._open_cache()
                try:
                    if self.cache is not None:
                        # The cache is optional: without Redis the catalog answers correctly, only
                        # uncached; /readyz says degraded. The first contact moves its generation.
                        await self.cache.start()
                    async with self._service(engine):
                        yield
                finally:
                    if self.cache is not None:
                        await self.cache.close()
                    if self.redis is not None:
                        await self.redis.aclose()
            finally:
                await engine.dispose()
        finally:
            await self.broker.stop()

    def _open_cache(self) -> None:
        s = self.settings
        if not s.redis_url:
            # Redis is optional: without it there is no cache to be available, and no gauge saying
            # "0" (an alert on it would fire for as long as the catalog runs), as on the gateway.
            self.metrics.registry.unregister(self.metrics.redis_available)
            return
        self.redis = redis_client(s.redis_url, connect_timeout_s=s.redis_connect_timeout_s, timeout_s=s.redis_timeout_s)
        self.cache = AnswerCache(
            self.redis,
            s.nats_namespace,
            s.cache_ttl_s,
            timeout_s=s.redis_timeout_s,
            breaker=CircuitBreaker(
                cooldown_s=s.redis_cooldown_s, max_cooldown_s=s.redis_max_cooldown_s, start_open=True
            ),
            metrics=self.metrics,
        )

    @contextlib.asynccontextmanager
    async def _service(self, engine: Any) -> AsyncIterator[None]:
        s = self.settings
        self.repo = Repository(engine)
        recorder = LastUsedRecorder(
            self.repo.touch_keys, interval_s=s.last_used_interval_s, flush_s=s.last_used_flush_s
        )
        self.service = CatalogService(
            repo=self.repo, publish=self._publish, last_used=recorder, cache=self.cache, reply_ttl_s=s.reply_cache_ttl_s
        )
        self.broker.context.set_global("catalog", self.service)
        self.broker.context.set_global("catalog_metrics", self.metrics)
        flusher = asyncio.create_task(recorder.run(), name="catalog-last-used")
        try:
            yield
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            await recorder.flush()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CatalogRuntime]:
        """The whole catalog: the health port (when set), the lifespan and the subscribers."""
        s = self.settings
        async with serving_health(self.health, s.health_host, s.health_port), self.lifespan():
            await self.broker.start()
            assert self.service is not None
            # Every replica hears every runner (no queue group): what the fleet serves, for agent checks.
            heartbeats = await self.broker.connection.subscribe(
                self.subjects.runner_heartbeat, cb=self.service.fleet.on_heartbeat
            )
            probe = AdminRequest(op="roles.list").model_dump_json().encode()
            await wait_until_answering(self.broker.connection, self.subjects.catalog_admin, probe)
            self.health.phase = "serving"
            try:
                yield self
            finally:
                self.health.phase = "draining"
                await heartbeats.unsubscribe()

    def _report_schema(self, problem: str | None) -> None:
        # While the schema is behind, /readyz says why (besides "starting"); gone once it is current.
        if problem is None:
            self.health.facts.pop("schema", None)
        else:
            self.health.facts["schema"] = _constant(problem)

    async def _nats_answers(self) -> bool:
        # NatsBroker.connection is the public handle of its nats-py client (it raises before connect).
        return await nats_answers(self.broker.connection)

    async def _database_answers(self) -> bool:
        assert self.repo is not None
        await self.repo.ping()
        return True

    async def _redis_answers(self) -> bool:
        # Through the cache's breaker: false at once while it is open, bounded by the Redis timeout.
        return self.cache is not None and await self.cache.answers()


def _constant(value: str) -> Callable[[], Awaitable[str]]:
    async def fact() -> str:
        return value

    return fact


def create_app(settings: CatalogSettings) -> CatalogRuntime:
    """The catalog process for ``settings``; ``async with create_app(settings).running(): …`` serves it."""
    return CatalogRuntime(settings)
