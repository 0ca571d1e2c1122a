"""Composition root: :func:`create_app` wires settings → NATS broker, database, Redis, the service.

The lifespan opens NATS, the database (migrating it first when asked) and Redis in that order and
closes them in reverse. :class:`CatalogRuntime.running` runs the same lifespan without the HTTP
side, for tests and for ``CATALOG_HEALTH_PORT=0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from faststream import FastStream
from faststream.asgi import AsgiFastStream, AsgiResponse, get
from faststream.nats import NatsBroker
from faststream.nats.opentelemetry import NatsTelemetryMiddleware
from redis.asyncio import Redis
from redis.exceptions import RedisError

from contracts import AdminRequest, CacheInvalidated, Subjects
from servicekit.natsio import trace_headers, wait_until_answering

from .cache import AnswerCache
from .db import migrate, open_engine
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
            [u.strip() for u in settings.nats_url.split(",")],
            name="catalog",
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
            connect_timeout=5,
            # Per-message "Received/Processed" lines would cost more than the answers themselves.
            log_level=logging.DEBUG,
            # Continues the caller's trace (W3C traceparent header) in a consumer span per request.
            middlewares=[NatsTelemetryMiddleware(include_messages_counters=False)],
        )
        register(self.broker, self.subjects, workers=settings.workers)
        self.redis: Redis | None = None
        self.repo: Repository | None = None
        self.service: CatalogService | None = None

    async def _publish(self, event: CacheInvalidated) -> None:
        await self.broker.publish(
            event.model_dump_json().encode(), self.subjects.catalog_invalidated, headers=trace_headers()
        )

    @contextlib.asynccontextmanager
    async def lifespan(self, *_: Any, **__: Any) -> AsyncIterator[None]:
        s = self.settings
        await self.broker.connect()
        try:
            if s.migrate:
                await migrate(s.database_url)
            engine = open_engine(s.database_url)
            try:
                self.redis = Redis.from_url(s.redis_url) if s.redis_url else None
                try:
                    if self.redis is not None:
                        await self._check_redis()
                    async with self._service(engine):
                        yield
                finally:
                    if self.redis is not None:
                        await self.redis.aclose()
            finally:
                await engine.dispose()
        finally:
            await self.broker.stop()

    async def _check_redis(self) -> None:
        # The cache is optional: without Redis the catalog answers correctly, only uncached
        # (cache calls fail soft); /readyz reports it.
        assert self.redis is not None
        try:
            await self.redis.ping()
        except RedisError:
            log.warning("redis is not reachable at start-up; answering uncached until it is", exc_info=True)

    @contextlib.asynccontextmanager
    async def _service(self, engine: Any) -> AsyncIterator[None]:
        s = self.settings
        self.repo = Repository(engine)
        recorder = LastUsedRecorder(
            self.repo.touch_keys, interval_s=s.last_used_interval_s, flush_s=s.last_used_flush_s
        )
        cache = AnswerCache(self.redis, s.nats_namespace, s.cache_ttl_s) if self.redis is not None else None
        self.service = CatalogService(
            repo=self.repo, publish=self._publish, last_used=recorder, cache=cache, reply_ttl_s=s.reply_cache_ttl_s
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
            if cache is not None:
                await cache.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CatalogRuntime]:
        """The lifespan plus the subscribers: a full catalog without the HTTP side."""
        async with self.lifespan():
            await self.broker.start()
            await self._flush()
            assert self.broker._connection is not None
            probe = AdminRequest(op="roles.list").model_dump_json().encode()
            await wait_until_answering(self.broker._connection, self.subjects.catalog_admin, probe)
            yield self

    async def _flush(self, timeout: float = 5.0) -> bool:
        """A PING/PONG round trip: the server has every subscription sent before it, and NATS is up."""
        conn = self.broker._connection
        if conn is None:
            return False
        try:
            await conn.flush(timeout=max(1, round(timeout)))
        except Exception:
            return False
        return True

    async def readiness(self) -> dict[str, bool]:
        # A flush, not just "connected": once it answers, the request/reply subscriptions are live.
        checks: dict[str, bool] = {"nats": await self._flush(timeout=1.0)}
        try:
            assert self.repo is not None
            await asyncio.wait_for(self.repo.ping(), 2.0)
            checks["database"] = True
        except Exception:
            checks["database"] = False
        if self.settings.redis_url:
            try:
                assert self.redis is not None
                await asyncio.wait_for(self.redis.ping(), 1.0)
                checks["redis"] = True
            except Exception:
                checks["redis"] = False
        return checks


def _routes(runtime: CatalogRuntime) -> list[tuple[str, Any]]:
    @get(include_in_schema=False)
    async def healthz(scope: Any) -> AsgiResponse:
        return AsgiResponse(b'{"status":"ok"}', status_code=200, headers={"content-type": "application/json"})

    @get(include_in_schema=False)
    async def readyz(scope: Any) -> AsgiResponse:
        checks = await runtime.readiness()
        ready = all(checks.values())
        body = json.dumps({"status": "ready" if ready else "not ready", "checks": checks}).encode()
        return AsgiResponse(body, status_code=200 if ready else 503, headers={"content-type": "application/json"})

    @get(include_in_schema=False)
    async def metrics(scope: Any) -> AsgiResponse:
        return AsgiResponse(runtime.metrics.render(), status_code=200, headers={"content-type": "text/plain"})

    return [("/healthz", healthz), ("/readyz", readyz), ("/metrics", metrics)]


def create_app(settings: CatalogSettings) -> FastStream | AsgiFastStream:
    """The catalog application: an ASGI app with health routes, or a bare FastStream app when the
    health port is 0."""
    runtime = CatalogRuntime(settings)
    if settings.health_port:
        app: FastStream | AsgiFastStream = AsgiFastStream(
            runtime.broker, asgi_routes=_routes(runtime), lifespan=runtime.lifespan
        )
    else:
        app = FastStream(runtime.broker, lifespan=runtime.lifespan)
    app.catalog_runtime = runtime  # type: ignore[union-attr]
    return app
