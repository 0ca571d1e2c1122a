"""Every subject and stream name, defined once.

Subjects are ``<domain>.<entity>.<verb or event>.v<N>``. A :class:`Subjects` carries an optional
namespace that prefixes every subject and stream name, so that tests (and several stacks on one NATS)
never see each other's traffic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAMESPACE = re.compile(r"^[A-Za-z0-9_-]*$")


@dataclass(frozen=True)
class Subjects:
    """Subject and stream names under one namespace (``""``: none)."""

    namespace: str = ""

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError("a NATS namespace may hold only letters, digits, '_' and '-'")

    def _s(self, name: str) -> str:
        return f"{self.namespace}.{name}" if self.namespace else name

    def _stream(self, name: str) -> str:
        return f"{self.namespace}_{name}" if self.namespace else name

    # --- runs -------------------------------------------------------------------------------
    @property
    def run_request(self) -> str:
        """A :class:`contracts.runs.RunRequest`; JetStream stream :attr:`runs_stream` (work queue)."""
        return self._s("run.request.v1")

    @property
    def run_offer(self) -> str:
        """A :class:`contracts.runs.RunRequest` offered to a runner with a free slot (core NATS request/reply,
        queue group :data:`RUNNER_QUEUE`): the runner answers :data:`OFFER_TAKEN` and runs it, or
        :data:`OFFER_DECLINED`; with no taker the gateway queues it on :attr:`run_request`."""
        return self._s("run.offer.v1")

    def run_events(self, run_id: str) -> str:
        """The :data:`contracts.events.RunEvent` stream of one run (core NATS, ordered per run)."""
        return self._s(f"run.event.v1.{run_id}")

    @property
    def run_events_all(self) -> str:
        return self._s("run.event.v1.*")

    def run_cancel(self, run_id: str) -> str:
        """A :class:`contracts.runs.CancelRun` for one run (core NATS, best effort)."""
        return self._s(f"run.cancel.v1.{run_id}")

    @property
    def run_cancel_all(self) -> str:
        return self._s("run.cancel.v1.*")

    def run_admitted(self, run_id: str) -> str:
        """A :class:`contracts.runs.RunAdmitted` for one run (core NATS)."""
        return self._s(f"run.admitted.v1.{run_id}")

    @property
    def run_admitted_all(self) -> str:
        return self._s("run.admitted.v1.*")

    @property
    def runs_stream(self) -> str:
        return self._stream("RUNS")

    @property
    def run_events_stream(self) -> str:
        """Every run's events, kept briefly (file storage): a gateway that missed some — a NATS restart,
        a reconnect — reads them again from here."""
        return self._stream("RUN_EVENTS")

    @property
    def runs_consumer(self) -> str:
        """The one durable pull consumer every runner shares."""
        return "runners"

    @property
    def responses_bucket(self) -> str:
        """The JetStream object store of stored Responses API responses (one object per response id)."""
        return self._stream("RESPONSES")

    @property
    def idempotency_bucket(self) -> str:
        """The JetStream key-value bucket of ``Idempotency-Key`` entries (chat and Responses routes)."""
        return self._stream("IDEMPOTENCY")

    @property
    def idempotency_results_bucket(self) -> str:
        """The JetStream object store of finished keyed runs' events."""
        return self._stream("IDEMPOTENCY_RESULTS")

    # --- the runner fleet ---------------------------------------------------------------------
    @property
    def runner_heartbeat(self) -> str:
        """A :class:`contracts.fleet.RunnerHeartbeat` from every runner about once a second (core NATS)."""
        return self._s("runner.heartbeat.v1")

    @property
    def gateway_heartbeat(self) -> str:
        """A :class:`contracts.fleet.GatewayHeartbeat` from every gateway process about once a second (core NATS)."""
        return self._s("gateway.heartbeat.v1")

    # --- usage (money: JetStream, file storage) -----------------------------------------------
    @property
    def usage_recorded(self) -> str:
        """A :class:`contracts.usage.UsageRecorded`, one per model call; ``Nats-Msg-Id = run_id:call_index``."""
        return self._s("usage.call.recorded.v1")

    @property
    def usage_run_closed(self) -> str:
        """A :class:`contracts.usage.RunClosed` once a run makes no more calls; ``Nats-Msg-Id = run_id:closed``."""
        return self._s("usage.run.closed.v1")

    @property
    def usage_all(self) -> str:
        return self._s("usage.>")

    @property
    def usage_stream(self) -> str:
        return self._stream("USAGE")

    @property
    def usage_consumer(self) -> str:
        return "billing"

    # --- catalog (request/reply, queue group "catalog") --------------------------------------
    @property
    def catalog_verify_key(self) -> str:
        return self._s("catalog.apikey.verify.v1")

    @property
    def catalog_agent_access(self) -> str:
        return self._s("catalog.agent.access.v1")

    @property
    def catalog_models_list(self) -> str:
        return self._s("catalog.models.list.v1")

    @property
    def catalog_admin(self) -> str:
        return self._s("catalog.admin.request.v1")

    @property
    def catalog_invalidated(self) -> str:
        """A :class:`contracts.catalog.CacheInvalidated` fan-out (core NATS, no queue group)."""
        return self._s("catalog.cache.invalidated.v1")

    # --- billing (request/reply, queue group "billing") --------------------------------------
    @property
    def billing_admit(self) -> str:
        return self._s("billing.reservation.admit.v1")

    @property
    def billing_prefetch(self) -> str:
        return self._s("billing.reservation.prefetch.v1")

    @property
    def billing_extend(self) -> str:
        return self._s("billing.reservation.extend.v1")

    @property
    def billing_balance(self) -> str:
        return self._s("billing.balance.get.v1")

    @property
    def billing_admin(self) -> str:
        return self._s("billing.admin.request.v1")

    @property
    def billing_prices_changed(self) -> str:
        """A :class:`contracts.billing.PricesChanged` fan-out (core NATS, no queue group)."""
        return self._s("billing.prices.changed.v1")


#: Queue group names for request/reply services.
CATALOG_QUEUE = "catalog"
BILLING_QUEUE = "billing"
#: The queue group of the runners' :attr:`Subjects.run_offer` subscriptions.
RUNNER_QUEUE = "runners"

#: A runner's answers to a run offered on :attr:`Subjects.run_offer`.
OFFER_TAKEN = b"taken"
OFFER_DECLINED = b"declined"

#: NATS header names.
MSG_ID_HEADER = "Nats-Msg-Id"
TRACEPARENT_HEADER = "traceparent"
