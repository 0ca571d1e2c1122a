"""The GenAI client metrics a run feeds: token usage by type and each model call's duration, with how
it failed; model names as a bounded label."""

from __future__ import annotations

import pytest

from contracts import TokenUsage
from runner.agent import AgentRun, RunConfig
from runner.connections import Connection
from runner.errors import ProviderError
from runner.metrics import OTHER, Metrics, ModelLabels
from runner.providers import FinishChunk, TextChunk, UsageChunk

from .test_agent_loop import MemoryPorts, ScriptedProvider, _request

pytestmark = pytest.mark.unit

LABELS = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": "openai", "gen_ai_request_model": "m"}


def _run(provider: ScriptedProvider, metrics: Metrics) -> AgentRun:
    return AgentRun(
        _request([]),
        connection=Connection("openai", "openai", None, "k"),
        provider=provider,
        tools=[],
        ports=MemoryPorts(),
        config=RunConfig(heartbeat_s=60),
        metrics=metrics,
    )


async def test_token_usage_and_duration_are_observed_once_per_call() -> None:
    metrics = Metrics()
    usage = TokenUsage(input_tokens=7, cache_read_tokens=3, output_tokens=5, reasoning_tokens=1)
    turn = [TextChunk("a"), TextChunk("b"), TextChunk("c"), FinishChunk("stop"), UsageChunk(usage)]
    assert await _run(ScriptedProvider([turn]), metrics).execute() == "completed"  # type: ignore[list-item]
    value = metrics.registry.get_sample_value
    assert value("gen_ai_client_token_usage_sum", {**LABELS, "gen_ai_token_type": "input"}) == 10
    assert value("gen_ai_client_token_usage_count", {**LABELS, "gen_ai_token_type": "input"}) == 1
    assert value("gen_ai_client_token_usage_sum", {**LABELS, "gen_ai_token_type": "output"}) == 5
    assert value("gen_ai_client_token_usage_count", {**LABELS, "gen_ai_token_type": "output"}) == 1
    assert value("gen_ai_client_operation_duration_seconds_count", {**LABELS, "error_type": ""}) == 1


async def test_a_refused_call_is_timed_with_its_error_type() -> None:
    metrics = Metrics()
    run = _run(ScriptedProvider([[ProviderError("no such model")]]), metrics)  # type: ignore[list-item]
    assert await run.execute() == "failed"
    value = metrics.registry.get_sample_value
    assert value("gen_ai_client_operation_duration_seconds_count", {**LABELS, "error_type": "provider_error"}) == 1
    assert value("gen_ai_client_operation_duration_seconds_count", {**LABELS, "error_type": ""}) is None
    assert value("gen_ai_client_token_usage_count", {**LABELS, "gen_ai_token_type": "input"}) is None


@pytest.mark.parametrize(
    ("refusal", "error_type"),
    [
        (ProviderError("too long", 400, code="context_length_exceeded"), "provider_refused_request"),
        (ProviderError("made up", 400, code="some_provider_specific_code"), "provider_refused_request"),
        (ProviderError("slow down", 429), "rate_limit_exceeded"),
        (ProviderError("overloaded", 529), "provider_unavailable"),
    ],
)
async def test_a_providers_own_code_reaches_the_client_but_never_a_label(
    refusal: ProviderError, error_type: str
) -> None:
    """The client gets the provider's code (so that it recognises context_length_exceeded); the
    metric's error_type stays within a fixed set, whatever codes a provider makes up."""
    metrics = Metrics()
    run = _run(ScriptedProvider([[refusal]]), metrics)  # type: ignore[list-item]
    assert await run.execute() == "failed"
    value = metrics.registry.get_sample_value
    assert value("gen_ai_client_operation_duration_seconds_count", {**LABELS, "error_type": error_type}) == 1


def test_model_names_are_a_bounded_label_set() -> None:
    models = ModelLabels(limit=2)
    assert models("gpt-4o") == "gpt-4o"
    assert models("claude-sonnet-4@2025") == "claude-sonnet-4@2025"
    assert models("a third one") == OTHER  # not a model name: spaces
    assert models("gpt-5") == OTHER  # over the limit
    assert models("gpt-4o") == "gpt-4o"  # known ones keep their name
    assert models("x" * 200) == OTHER
