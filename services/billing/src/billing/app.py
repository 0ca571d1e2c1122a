"""Composition root: settings → NATS, the database (migrated), the price table, the ledger, handlers,
the fleet watch (:mod:`billing.fleet`: a dead runner's calls billed, its runs closed), the USAGE
consumer, the reservation sweeper and the health server. Opened in that order, closed in reverse.

Health (:mod:`servicekit.health`, the same body as every service): ``/readyz`` checks NATS and the
database (which includes a live USAGE consumer). Parked usage (``usage_dead_letters``, see
:mod:`billing.deadletters`) does not make billing unready: every other user's usage is still billed,
and taking the process out of service (or restarting it) would bill nothing more and park nothing
less. ``/readyz`` stays 200 and says ``"status": "degraded"`` with the number parked in
``dead_letters``; the ``billing_usage_dead_letters_total`` metric is what to alert on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from nats.aio.client import Client
from sqlalchemy import text

from contracts import AdminRequest, Subjects
from servicekit import natsio
from servicekit.health import Health, HealthServer, nats_answers
from servicekit.natsio import flush_in_order

from .admitpath import AdmitPath
from .consumer import UsageConsumer
from .db import migrate, open_engine, wait_for_schema
from .deadletters import DeadLetters
from .fleet import FleetWatch
from .handlers import announcer, register
from .ledger import Ledger, Policy
from .metrics import Metrics
from .money import MICRO, to_micro
from .pricing import PriceEntry, PriceTable, from_file, shipped
from .service import BillingService
from .settings import BillingSettings

log = logging.getLogger(__name__)


class BillingApp:
    """One billing process. ``async with app.running(): ...`` runs it until the block ends."""

    def __init__(self, settings: BillingSettings) -> None:
        self.settings = settings
        self.subjects = Subjects(settings.nats_namespace)
        self.ledger: Ledger | None = None
        self.consumer: UsageConsumer | None = None
        self.dead_letters: DeadLetters | None = None
        self.fleet: FleetWatch | None = None
        self.nc: Client | None = None
        self._reloading: asyncio.Task[None] | None = None
        self.metrics = Metrics(lambda: self.consumer)
        self.usage_lag = self.metrics.usage_lag(lambda: self.nc, self.subjects)
        self.health = Health(
            {"nats": lambda: nats_answers(self.nc), "database": self.check_database},
            facts={"dead_letters": self.count_dead_letters},
            degraded=lambda facts: bool(facts["dead_letters"]),
            # A USAGE consumer that died does not come back by itself: /healthz fails, and the
            # orchestrator (Kubernetes, make run's supervisor) restarts the process.
            alive=lambda: self.consumer is None or not self.consumer.crashed,
            metrics=self.metrics.render,
            sample=self.usage_lag.sample,
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BillingApp]:
        s = self.settings
        # The health port answers from the start ("starting", not ready), so that a wait for NATS or
        # for the schema below is visible on /readyz rather than a start-up probe failing until the
        # orchestrator restarts the process.
        health = HealthServer(self.health, s.health_host, s.health_port) if s.health_port else None
        if health:
            await health.start()
        try:
            nc = self.nc = await natsio.connect(
                s.nats_url, "billing", on_reconnected=self._on_reconnected, **s.nats_credentials()
            )
        except BaseException:
            if health:
                await health.stop()
            raise
        try:
            js = nc.jetstream()
            await natsio.ensure_streams(js, self.subjects, replicas=s.nats_stream_replicas)
            if s.migrate_on_start:
                await migrate(s.database_url)
            else:
                await wait_for_schema(s.database_url, self._report_schema)
            engine = open_engine(s.database_url, s.db_pool_size)
            admit_path = AdmitPath(s.database_url)
            try:
                await admit_path.start()
                self.ledger = Ledger(engine, self._policy(), await self._prices(engine), admit_path, self.metrics.spent)
                service = BillingService(self.ledger, self.metrics.refused, announcer(nc, self.subjects))
                inflight: set[asyncio.Task[None]] = set()
                subs = await register(nc, self.subjects, service, inflight)
                probe = AdminRequest(op="pricing.list").model_dump_json().encode()
                await natsio.wait_until_answering(nc, self.subjects.billing_admin, probe)
                self.dead_letters = DeadLetters(engine)
                self.consumer = UsageConsumer(
                    js,
                    self.subjects,
                    self.ledger.apply,
                    self.dead_letters.park,
                    batch=s.batch_size,
                    ack_wait_s=s.usage_ack_wait_s,
                    retry_delay_s=s.usage_retry_delay_s,
                    linger_s=s.usage_linger_s,
                )
                self.fleet = FleetWatch(nc, js, self.subjects, self.metrics.fleet, lost_after_s=s.runner_lost_s)
                await self.fleet.start()
                tasks = [
                    asyncio.create_task(self.consumer.run(), name="billing-usage"),
                    asyncio.create_task(self._sweep(), name="billing-sweep"),
                ]
                for task in tasks:
                    task.add_done_callback(_log_crash)
                self.health.phase = "serving"
                try:
                    yield self
                finally:
                    self.health.phase = "draining"
                    for sub in subs:
                        await sub.unsubscribe()
                    await self.fleet.stop()
                    self.consumer.stop()
                    # The consumer finishes (commits and acks) the batch in hand before it returns.
                    await asyncio.wait_for(asyncio.gather(tasks[0], return_exceptions=True), 10)
                    tasks[1].cancel()
                    await asyncio.gather(tasks[1], *inflight, return_exceptions=True)
            finally:
                if self._reloading is not None:
                    self._reloading.cancel()
                await admit_path.close()
                await engine.dispose()
        finally:
            if health:
                await health.stop()
            # Everything was unsubscribed and every answer sent above: nothing left to drain.
            await flush_in_order(nc)
            await nc.close()

    async def _on_reconnected(self) -> None:
        # A price set while this replica was away from NATS was announced without it: reload (in the
        # background, off the client's reconnect path).
        if self.ledger is not None:
            self._reloading = asyncio.create_task(self._reload_prices(), name="billing-reload-prices")

    async def _reload_prices(self) -> None:
        assert self.ledger is not None
        try:
            await self.ledger.reload_prices()
        except Exception as exc:
            log.warning("reloading the prices after a reconnect failed (%s); serving the ones it had", exc)

    def _report_schema(self, problem: str | None) -> None:
        # While the schema is behind, /readyz says why (besides "starting"); gone once it is current.
        if problem is None:
            self.health.facts.pop("schema", None)
        else:
            self.health.facts["schema"] = _constant(problem)

    def _policy(self) -> Policy:
        s = self.settings
        return Policy(
            balance_enabled=s.balance_enabled,
            transactions_enabled=s.transactions_enabled,
            start_balance=s.start_balance * MICRO,
            auto_refill_enabled=s.auto_refill_enabled,
            auto_refill_interval_s=s.auto_refill_interval_s,
            auto_refill_amount=s.auto_refill_amount * MICRO,
            reservation_ttl_s=s.reservation_ttl_s,
        )

    async def _prices(self, engine) -> PriceTable:  # type: ignore[no-untyped-def]
        s = self.settings
        layers = [shipped()]
        if s.pricing_file:
            layers.append(from_file(s.pricing_file))
        default = PriceEntry(
            to_micro(s.default_price_input, what="default input price"),
            to_micro(s.default_price_output, what="default output price"),
        )
        table = PriceTable(*layers, default=default)
        probe = Ledger(engine, self._policy(), table)
        for key, entry in (await probe.load_prices()).items():
            table.set(key, entry)
        return table

    async def _sweep(self) -> None:
        assert self.ledger is not None
        while True:
            await asyncio.sleep(min(30.0, self.settings.reservation_ttl_s / 4))
            try:
                released = await self.ledger.expire()
                if released:
                    log.info("released %d expired reservations", released)
            except Exception:
                log.exception("expiring reservations failed; will retry")

    async def check_database(self) -> bool:
        """For /readyz: the database answers, and the USAGE consumer is alive."""
        if self.ledger is None or self.consumer is None or self.consumer.crashed:
            return False
        try:
            async with self.ledger.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    async def count_dead_letters(self) -> int | None:
        """For /readyz: usage messages parked in ``usage_dead_letters`` (None: the database did not answer)."""
        if self.dead_letters is None:
            return None
        try:
            return await self.dead_letters.count()
        except Exception:
            return None


def _constant(value: str) -> Callable[[], Awaitable[str]]:
    async def fact() -> str:
        return value

    return fact


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("%s stopped on an error", task.get_name(), exc_info=task.exception())
