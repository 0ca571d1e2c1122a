"""The gateway's composition root: ``create_app(settings)`` builds the FastAPI app; its lifespan opens
NATS, the JetStream streams, Redis (optional) and the cache-invalidation subscription, in that order,
and closes them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from pydantic import ValidationError

from contracts import CacheInvalidated, PricesChanged, RunClosed, Subjects, new_id
from contracts.subjects import MSG_ID_HEADER
from servicekit.breaker import CircuitBreaker
from servicekit.health import nats_answers
from servicekit.natsio import connect, ensure_key_value, ensure_object_store, ensure_streams, trace_headers
from servicekit.redisio import redis_client
from servicekit.telemetry import setup_tracing

from .admin import router as admin_router
from .auth import Authenticator
from .context import GatewayContext
from .errors import install_exception_handlers
from .fastlane import GatewayApp, HotRoutes
from .fleet import RunnerWatch, announce, new_gateway_id
from .idempotency import IdempotencyStore, ResultArchive, ResumeWindows, bucket_name, results_bucket_name
from .metrics import Metrics
from .middleware import ObservabilityMiddleware
from .offers import RunOffers
from .openapi import document_openai_routes
from .preadmit import PreAdmissions
from .ratelimit import RateLimiter
from .responses.background import BackgroundResponses
from .responses.service import ResponsesService
from .responses.store import ResponseStore
from .routes import chat, health, models, responses
from .rpc import nats_requester
from .runs import recover_all
from .settings import GatewaySettings
from .shedding import LoadShedMiddleware

log = logging.getLogger(__name__)


def create_app(settings: GatewaySettings, *, on_ready: Callable[[], None] | None = None) -> GatewayApp:
    """The gateway app. Nothing connects until the lifespan runs; ``on_ready`` is called once it is up."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            setup_tracing("gateway", settings.otlp_endpoint)
        subjects = Subjects(settings.nats_namespace)

        preadmitted: PreAdmissions | None = None

        async def on_reconnected() -> None:
            # Core subscriptions are renewed; what they missed meanwhile is in RUN_EVENTS.
            reading = recover_all()
            log.warning("reconnected to NATS: %d open runs read their events again", reading)
            if preadmitted is not None:
                # A price change announced meanwhile went unheard: runs held ahead may be of old prices.
                dropped = preadmitted.drop_all()
                log.info("reconnected to NATS: %d runs admitted ahead handed back", dropped)

        offers: RunOffers | None = None

        def on_nats_error(error: Exception) -> None:
            if offers is not None:
                offers.heard(error)

        nc = await connect(
            settings.nats_url,
            "gateway",
            on_reconnected=on_reconnected,
            on_error=on_nats_error,
            **settings.nats_credentials(),
        )
        offers = RunOffers(nc, subjects.run_offer) if settings.offer_runs else None
        redis = None
        rate_limiter: RateLimiter | None = None
        responses_service: ResponsesService | None = None
        resume_windows: ResumeWindows | None = None
        try:
            js = nc.jetstream()
            await ensure_streams(js, subjects, replicas=settings.nats_stream_replicas)
            objects = await ensure_object_store(
                js,
                subjects.responses_bucket,
                ttl_s=settings.responses_ttl_s,
                replicas=settings.responses_store_replicas,
                description="stored responses of the Responses API",
            )
            response_store = ResponseStore(objects, settings.responses_store_timeout_s)
            responses_service = ResponsesService(
                response_store,
                BackgroundResponses(
                    response_store,
                    idle_timeout_s=settings.idle_timeout_s,
                    limit=settings.responses_max_background,
                    metrics=metrics,
                ),
            )
            app.state.responses = responses_service
            idempotency_kv = await ensure_key_value(
                js,
                bucket_name(settings.nats_namespace),
                ttl_s=settings.idempotency_ttl_s,
                replicas=settings.idempotency_store_replicas,
                description="Idempotency-Key entries of the chat and Responses routes",
            )
            idempotency_results = await ensure_object_store(
                js,
                results_bucket_name(settings.nats_namespace),
                ttl_s=settings.idempotency_ttl_s,
                replicas=settings.idempotency_store_replicas,
                description="events of finished runs started with an Idempotency-Key",
            )
            resume_windows = ResumeWindows(
                IdempotencyStore(idempotency_kv, settings.idempotency_timeout_s),
                nc,
                subjects,
                window_s=settings.resume_window_s,
                idle_timeout_s=settings.idle_timeout_s,
                js=js,
                archive=ResultArchive(idempotency_results, settings.idempotency_timeout_s),
            )
            app.state.idempotency = resume_windows
            if settings.redis_url:
                # Optional at run time too: short timeouts and a circuit breaker (gateway.ratelimit).
                redis = redis_client(
                    settings.redis_url,
                    connect_timeout_s=settings.redis_connect_timeout_s,
                    timeout_s=settings.redis_timeout_s,
                )
            rate_limiter = RateLimiter(
                redis,
                namespace=settings.nats_namespace,
                timeout_s=settings.redis_timeout_s,
                breaker=CircuitBreaker(
                    cooldown_s=settings.redis_cooldown_s, max_cooldown_s=settings.redis_max_cooldown_s
                ),
                registry=metrics.registry,
            )
            rpc = nats_requester(nc, settings.nats_reconnect_wait_s)
            auth = Authenticator(
                rpc,
                subjects,
                ttl_s=settings.auth_cache_ttl_s,
                stale_s=settings.auth_stale_s,
                rpc_timeout_s=settings.rpc_timeout_s,
            )

            async def on_invalidated(msg) -> None:  # type: ignore[no-untyped-def]
                try:
                    auth.invalidate(CacheInvalidated.model_validate_json(msg.data))
                except ValidationError:
                    log.warning("ignored a malformed cache invalidation")

            invalidations = await nc.subscribe(subjects.catalog_invalidated, cb=on_invalidated)
            fleet = RunnerWatch(settings.runner_lost_s)
            heartbeats = await nc.subscribe(subjects.runner_heartbeat, cb=fleet.on_heartbeat)
            watching = asyncio.create_task(fleet.sweep(hears=lambda: nats_answers(nc)), name="gateway-runner-watch")
            gateway_id = new_gateway_id()
            announcing = asyncio.create_task(
                announce(nc, subjects.gateway_heartbeat, gateway_id, settings.heartbeat_s), name="gateway-heartbeat"
            )

            async def close_run(closed: RunClosed) -> None:
                headers = trace_headers({MSG_ID_HEADER: closed.msg_id})
                await js.publish(
                    subjects.usage_run_closed,
                    closed.model_dump_json().encode(),
                    timeout=settings.rpc_timeout_s,
                    headers=headers,
                )

            preadmitted = PreAdmissions(
                rpc,
                subjects,
                close_run,
                lambda: new_id("chatcmpl-"),
                per_key=settings.preadmit_runs,
                max_per_key=settings.preadmit_max_runs,
                max_age_s=settings.preadmit_max_age_s,
                rpc_timeout_s=settings.rpc_timeout_s,
            )
            sweeping = asyncio.create_task(preadmitted.sweep(), name="gateway-preadmit-sweep")

            async def on_prices_changed(msg) -> None:  # type: ignore[no-untyped-def]
                # Whatever it says: runs held ahead at the old prices must not start unadmitted.
                assert preadmitted is not None
                dropped = preadmitted.drop_all()
                try:
                    key = PricesChanged.model_validate_json(msg.data).model_key
                except ValidationError:
                    key = "?"
                log.info("the price of %r was set: %d runs admitted ahead handed back", key, dropped)

            price_changes = await nc.subscribe(subjects.billing_prices_changed, cb=on_prices_changed)
            app.state.ctx = GatewayContext(
                settings=settings,
                nc=nc,
                js=js,
                subjects=subjects,
                auth=auth,
                metrics=metrics,
                redis=redis,
                rate_limiter=rate_limiter,
                rpc=rpc,
                preadmitted=preadmitted if settings.preadmit_runs else None,
                offers=offers,
                close_run=close_run,
                fleet=fleet,
                gateway_id=gateway_id,
            )
            if on_ready is not None:
                on_ready()
            log.info("gateway ready (namespace %r)", settings.nats_namespace)
            yield
            sweeping.cancel()
            watching.cancel()
            announcing.cancel()
            await heartbeats.unsubscribe()
            await price_changes.unsubscribe()
            await preadmitted.close()
            await invalidations.unsubscribe()
        finally:
            if resume_windows is not None:
                await resume_windows.close()
            if responses_service is not None:
                await responses_service.close()
            if rate_limiter is not None:
                await rate_limiter.aclose()
            if redis is not None:
                await redis.aclose()
            if not nc.is_closed:
                await nc.drain()

    app = GatewayApp(
        title="Switchboard gateway",
        version="0.1.0",
        lifespan=lifespan,
        # The admin API's contract for operators and tools; the OpenAI routes follow OpenAI's own spec.
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        # One server span per request comes from ObservabilityMiddleware; FastAPI's built-in
        # instrumentation would add a second span, metrics and log records to every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        # No redirects on an API: a trailing slash is a 404 in the envelope, never a 307 to a URL
        # built from the request's Host header.
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_exception_handlers(app)
    app.add_route(chat.PATH, chat.endpoint, methods=["POST"], include_in_schema=False)
    app.add_route(responses.PATH, responses.endpoint, methods=["POST"], include_in_schema=False)
    app.include_router(responses.router)
    document_openai_routes(app)  # the plain route above, in /openapi.json and /docs all the same
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(admin_router)
    # Innermost: past shedding, before FastAPI's routing.
    app.add_middleware(HotRoutes, routes={chat.PATH: chat.endpoint, responses.PATH: responses.endpoint})
    app.add_middleware(LoadShedMiddleware, metrics=metrics, max_in_flight=settings.max_in_flight)
    app.add_middleware(ObservabilityMiddleware, metrics=metrics)  # outermost: shed requests are counted too
    return app
