"""Prometheus metrics of the gateway, on a registry of the app's own (several apps may share a process).

The gateway is where Switchboard meets its clients, so it records the OpenTelemetry GenAI *server*
metrics (Prometheus naming) as a client experiences them: ``gen_ai_server_time_to_first_token_seconds``
from the request's arrival to the first content chunk sent, and
``gen_ai_server_time_per_output_token_seconds`` from that chunk to the end of a completed stream, per
output token after the first. Both are observed once per stream, and only for streams (an answer sent
as one body has no first token). An agent run that calls tools spends part of that time in the tools
and in the model's next call: it is the pace the client sees, not the provider's decoding speed (the
runner's ``gen_ai_client_operation_duration_seconds`` times each model call on its own).
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from servicekit.consumerlag import ConsumerLag

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from contracts import Subjects

TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: The GenAI semantic conventions' advisory buckets, with finer ones below 10 ms for fast models.
GENAI_TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
GENAI_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)


class Metrics:
    """Requests by route and status, time to first token, open streams, tokens."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes…
        self.requests = Counter(
            "gateway_http_requests", "HTTP requests answered", ["method", "route", "status"], registry=self.registry
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds",
            "From the request arriving to the first content chunk sent",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.open_streams = Gauge("gateway_open_streams", "Streaming responses open now", registry=self.registry)
        self.tokens = Counter("gateway_tokens", "Tokens of completed runs", ["kind"], registry=self.registry)
        self.runs = Counter("gateway_runs", "Runs by outcome", ["outcome"], registry=self.registry)
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "API requests being handled now (open streams included)",
            registry=self.registry,
        )
        self.runs_starting = Gauge(
            "gateway_runs_starting",
            "Runs admitted or queued and not started by a runner yet: the run queue as this gateway sees it",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "gateway_run_queue_wait_seconds",
            "From queueing a run to its runner's first event (an autoscaler's signal for runners)",
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.run_offers = Counter(
            "gateway_run_offers",
            "Runs offered straight to a runner with room before the RUNS queue, by outcome: taken, unanswered "
            "(not queued: it may have been taken), declined or no_runner (queued), not_sent (queued)",
            ["outcome"],
            registry=self.registry,
        )
        self.run_offers_late = Counter(
            "gateway_run_offers_answered_late",
            "Unanswered offers whose answer came while the run's first event was awaited, by answer: taken "
            "(waited for as any run), declined or no_runner (queued then)",
            ["answer"],
            registry=self.registry,
        )
        self.shed = Counter(
            "gateway_requests_shed",
            "Requests refused at once because the gateway is at a limit",
            ["limit"],
            registry=self.registry,
        )

        self.server_ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "GenAI semconv: from a streamed request's arrival to its first content chunk sent (as the client "
            "sees it, less the network)",
            buckets=GENAI_TTFT_BUCKETS,
            registry=self.registry,
        )
        self.server_tpot = Histogram(
            "gen_ai_server_time_per_output_token_seconds",
            "GenAI semconv: from a completed stream's first content chunk to its end, per output token after "
            "the first (tool steps of an agent run included)",
            buckets=GENAI_TPOT_BUCKETS,
            registry=self.registry,
        )
        self.runs_pending = Gauge(
            "gateway_runs_queue_pending_messages",
            "Runs in the RUNS queue not yet taken by any runner (the runners' shared consumer, read from "
            "JetStream when scraped; NaN: JetStream did not answer, or no runner has created the consumer yet)",
            registry=self.registry,
        )
        self.runs_ack_pending = Gauge(
            "gateway_runs_queue_ack_pending_messages",
            "Runs taken by a runner whose ack JetStream has not had yet (NaN: JetStream did not answer)",
            registry=self.registry,
        )
        self.runs_pending.set(math.nan)  # unknown until the first scrape reads it
        self.runs_ack_pending.set(math.nan)
        self._runs_lag: ConsumerLag | None = None

    def first_token(self, started_at: float) -> float:
        """A stream's first content chunk is going out: observe its time to first token; returns now."""
        now = time.perf_counter()
        self.ttft.observe(now - started_at)
        self.server_ttft.observe(now - started_at)
        return now

    def output_pace(self, first_at: float | None, output_tokens: int) -> None:
        """A stream completed: observe its time per output token (after the first one)."""
        if first_at is not None and output_tokens > 1:
            self.server_tpot.observe((time.perf_counter() - first_at) / (output_tokens - 1))

    async def sample(self, js: JetStreamContext, subjects: Subjects) -> None:
        """Before a render: read the RUNS queue's backlog from JetStream (at most once a second, within
        a second; NaN when it did not answer)."""
        if self._runs_lag is None:
            self._runs_lag = ConsumerLag(
                lambda: js,
                subjects.runs_stream,
                subjects.runs_consumer,
                pending=self.runs_pending,
                ack_pending=self.runs_ack_pending,
            )
        await self._runs_lag.sample()

    def render(self) -> bytes:
        return generate_latest(self.registry)
