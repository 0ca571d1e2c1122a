"""What an operator reads on ``/metrics`` after real requests through the whole stack: the GenAI
metrics (the runner's client side, the gateway's server side), credits spent by model, admission
refusals, the RUNS queue's and the USAGE consumer's backlogs, and every process's CPU and memory."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.checks import assert_usage_billed, run_ledger
from tests.e2e.conftest import StackHandle
from tests.e2e.fake import eventually

pytestmark = pytest.mark.e2e

USAGE = {"prompt_tokens": 40, "cache_read_tokens": 16, "cache_write_tokens": 8, "output_tokens": 12}
TTFT_MS = 300  # the fake model's own time to first token


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(url: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(url)
    assert r.status_code == 200, r.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def metrics_url(e2e: StackHandle, name: str) -> str:
    return e2e.stack.health_url(name).removesuffix("/readyz") + "/metrics"


async def test_genai_and_business_metrics_follow_a_streamed_run(e2e: StackHandle, client: Any) -> None:
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "Counted and timed.", "usage": USAGE, "ttft_ms": TTFT_MS}])
    gateway, runner, billing = (metrics_url(e2e, n) for n in ("gateway", e2e.stack.runner_names[0], "billing"))
    before = await scrape(gateway)

    stream = await client.chat.completions.create(
        model=agent.id,
        messages=[{"role": "user", "content": "Count this."}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    last = chunks[-1]
    await assert_usage_billed(e2e.admin, e2e.seeded.user_id, last.id, last.usage)

    # The runner: one model call, its tokens exactly the provider's usage (input = the whole prompt).
    genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "gen_ai_request_model": agent.model}
    r = await scrape(runner)
    usage = "gen_ai_client_token_usage"
    assert value(r, f"{usage}_count", **genai, gen_ai_token_type="input") == 1
    assert value(r, f"{usage}_sum", **genai, gen_ai_token_type="input") == USAGE["prompt_tokens"]
    assert value(r, f"{usage}_sum", **genai, gen_ai_token_type="output") == USAGE["output_tokens"]
    duration = "gen_ai_client_operation_duration_seconds"
    assert value(r, f"{duration}_count", **genai, error_type="") == 1
    assert value(r, f"{duration}_sum", **genai, error_type="") >= TTFT_MS / 1000
    assert value(r, "process_resident_memory_bytes") > 0

    # The gateway: this stream's time to first token (the model's own included) and its pace.
    g = await scrape(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(g, name, **labels) - value(before, name, **labels)

    assert delta("gen_ai_server_time_to_first_token_seconds_count") == 1
    assert delta("gen_ai_server_time_to_first_token_seconds_sum") >= TTFT_MS / 1000
    assert delta("gen_ai_server_time_per_output_token_seconds_count") == 1
    assert 0 < delta("gen_ai_server_time_per_output_token_seconds_sum") < 1
    assert delta("gateway_time_to_first_token_seconds_count") == 1  # the older name, kept
    assert delta("gateway_http_requests_total", method="POST", route="/v1/chat/completions", status="200") == 1
    assert value(g, "gateway_open_streams") == 0
    assert value(g, "gateway_runs_queue_pending_messages") == 0  # read from JetStream: a number, not NaN
    assert value(g, "process_cpu_seconds_total") > 0

    # Billing: the credits the ledger debited, under the model's price key, once committed.
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, last.id, 1)
    debited = -sum(Decimal(str(e["amount"])) for e in entries)
    assert debited > 0

    async def spent() -> float:
        # Labelled by the price key the call matched: the tests price under provider/model.
        return value(await scrape(billing), "billing_credits_spent_total", model=f"openai/{agent.model}".lower())

    assert await eventually(spent, lambda v: v > 0, timeout=10) == pytest.approx(float(debited))
    b = await scrape(billing)
    assert not math.isnan(value(b, "billing_usage_consumer_pending_messages"))
    pending = await eventually(
        lambda: scrape(billing), lambda s: value(s, "billing_usage_consumer_ack_pending_messages") == 0, timeout=10
    )
    assert value(pending, "billing_usage_consumer_pending_messages") == 0


async def test_a_refused_admission_is_counted_by_reason(e2e: StackHandle) -> None:
    agent = e2e.agent("openai", owner_id=e2e.seeded.poor_id)
    billing = metrics_url(e2e, "billing")
    refused = {"operation": "admit", "reason": "insufficient_quota"}
    before = value(await scrape(billing), "billing_admission_refusals_total", **refused)

    async with e2e.client(api_key=e2e.seeded.poor_key) as poor:
        with pytest.raises(openai.APIStatusError) as caught:
            await poor.chat.completions.create(model=agent.id, messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 402

    after = value(await scrape(billing), "billing_admission_refusals_total", **refused)
    assert after == before + 1
