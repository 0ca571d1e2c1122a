"""The runner's Prometheus metrics, on a registry of this process's own (no module-level state).

Besides its own ``runner_*`` series, the runner records the OpenTelemetry GenAI *client* metrics in
Prometheus naming — it is the client of the model providers: ``gen_ai_client_token_usage`` and
``gen_ai_client_operation_duration_seconds``, each observed once per model call (never per token).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, generate_latest

from contracts import TokenUsage

T = TypeVar("T")

#: Seconds; the hot path is a few milliseconds over the provider's own time to first token.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
#: The GenAI semantic conventions' advisory buckets.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")

#: Distinct model names one process labels by their name; any further one is ``other``. Models are
#: what operators configure on agents, so a few dozen at most in practice — the cap only keeps a
#: misconfiguration from growing the series without bound.
MAX_MODELS = 64
OTHER = "other"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}")


class ModelLabels:
    """A bounded label set for model names: the first :data:`MAX_MODELS` well-formed names seen."""

    def __init__(self, limit: int = MAX_MODELS) -> None:
        self.limit = limit
        self._known: set[str] = set()

    def __call__(self, model: str) -> str:
        if model in self._known:
            return model
        if len(self._known) >= self.limit or not _MODEL_NAME.fullmatch(model):
            return OTHER
        self._known.add(model)
        return model


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, process_resident_memory_bytes…
        self.runs_started = Counter("runner_runs_started", "Runs started on this runner", registry=self.registry)
        self.runs = Counter(
            "runner_runs",
            "Runs finished, by status (completed, failed, cancelled, expired)",
            ["status"],
            registry=self.registry,
        )
        self.active = Gauge("runner_active_runs", "Runs executing now", registry=self.registry)
        self.model_calls = Counter(
            "runner_model_calls",
            "Model calls whose usage was recorded, by provider kind and usage context",
            ["provider", "context"],
            registry=self.registry,
        )
        self.tokens = Counter("runner_tokens", "Tokens recorded, by kind", ["provider", "kind"], registry=self.registry)
        self.ttft = Histogram(
            "runner_time_to_first_token_seconds",
            "From a run's start on this runner to its first streamed output",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "runner_queue_wait_seconds",
            "Time from a run's request to its start on a runner",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.offers = Counter(
            "runner_run_offers",
            "Runs a gateway offered straight to this runner, by answer (taken, declined: no room after all)",
            ["answer"],
            registry=self.registry,
        )
        self._offers_taken = self.offers.labels("taken")
        self._offers_declined = self.offers.labels("declined")
        self.usage_publish_retries = Counter(
            "runner_usage_publish_retries", "USAGE publishes retried", registry=self.registry
        )
        self.models = ModelLabels()
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens of one model call, by type (input: the whole prompt, cached included; output: "
            "reasoning included), as recorded for billing",
            [*GENAI_LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "One model call as the runner makes it: from the request to the provider to the end of its "
            "stream (its deltas forwarded and its usage stored); error_type is empty on success",
            [*GENAI_LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )

    def offer_answered(self, taken: bool) -> None:
        (self._offers_taken if taken else self._offers_declined).inc()

    def record_call(self, provider: str, context: str, usage: TokenUsage, model: str = "") -> None:
        """Count one model call and its tokens (once its usage is stored on USAGE)."""
        self.model_calls.labels(provider, context).inc()
        for kind, value in (
            ("input", usage.input_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("cache_read", usage.cache_read_tokens),
            ("output", usage.output_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if value:
                self.tokens.labels(provider, kind).inc(value)
        name = self.models(model)
        self.token_usage.labels("chat", provider, name, "input").observe(usage.prompt_tokens)
        self.token_usage.labels("chat", provider, name, "output").observe(usage.output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def observed_call(metrics: Metrics | None, provider: str, model: str, call: Awaitable[T]) -> T:
    """Await one model call, observing its duration (and how it failed) once it ends."""
    if metrics is None:
        return await call
    start = time.perf_counter()
    error = ""
    try:
        return await call
    except asyncio.CancelledError:
        error = "cancelled"
        raise
    except Exception as exc:
        # A run's errors are named from a fixed set (provider_error, stream_broken, … : their kind,
        # else their code); anything else by its class. Both are bounded.
        info = getattr(exc, "info", None)
        error = getattr(exc, "kind", None) or getattr(info, "code", None) or type(exc).__name__
        raise
    finally:
        metrics.operation_duration.labels("chat", provider, metrics.models(model), error).observe(
            time.perf_counter() - start
        )
