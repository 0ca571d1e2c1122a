"""One trace per run: the RunRequest's ``traceparent`` is the parent of ``invoke_agent``, each model
call is a ``chat`` span with GenAI attributes, each tool an ``execute_tool`` span, and the usage
published inside a model call carries that call's trace context to billing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts import RUN_EVENT, Subjects, UsageRecorded
from contracts.events import TERMINAL_EVENT_TYPES
from fakellm.server import FakeLLM
from runner.app import create_app
from runner.settings import RunnerSettings
from servicekit.natsio import flush_in_order

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


class RunEnded(SpanProcessor):
    """Sets ``ended`` when a run span ends (the run span closes after RunClosed is published)."""

    def __init__(self) -> None:
        self.ended = asyncio.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if span.name.startswith("invoke_agent"):
            self.ended.set()


@pytest.fixture
async def traced(
    nats_client: Any, namespace: str, fake_llm: FakeLLM, runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> AsyncIterator[tuple[Harness, InMemorySpanExporter, RunEnded]]:
    exporter = InMemorySpanExporter()
    ended = RunEnded()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    provider.add_span_processor(ended)
    async with create_app(runner_settings, env=runner_env, tracer_provider=provider) as app:
        yield Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=app), exporter, ended
    provider.shutdown()


async def test_run_spans_continue_the_request_trace(
    traced: tuple[Harness, InMemorySpanExporter, RunEnded],
) -> None:
    h, exporter, run_ended = traced
    await h.script(
        "m-trace",
        [
            {
                "tool_calls": [{"name": "calculator", "arguments": {"expression": "2+3"}}],
                "usage": {"prompt_tokens": 12, "cache_read_tokens": 2, "output_tokens": 4},
            },
            {"text": "5", "usage": {"prompt_tokens": 20, "output_tokens": 1}},
        ],
    )
    req = make_request("m-trace", tools=["calculator"])
    done, closed = asyncio.Event(), asyncio.Event()
    usage_headers: list[dict[str, str]] = []

    async def on_event(msg: Any) -> None:
        if RUN_EVENT.validate_json(msg.data).type in TERMINAL_EVENT_TYPES:
            done.set()

    async def on_usage(msg: Any) -> None:
        if msg.subject == h.subjects.usage_recorded:
            UsageRecorded.model_validate_json(msg.data)
            usage_headers.append(dict(msg.headers or {}))
        else:
            closed.set()

    subs = [
        await h.nc.subscribe(h.subjects.run_events(req.run_id), cb=on_event),
        await h.nc.subscribe(h.subjects.usage_all, cb=on_usage),
    ]
    await flush_in_order(h.nc)
    await h.nc.jetstream().publish(
        h.subjects.run_request,
        req.model_dump_json().encode(),
        headers={"Nats-Msg-Id": req.run_id, "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    )
    await asyncio.wait_for(done.wait(), WAIT_S)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    await asyncio.wait_for(run_ended.ended.wait(), WAIT_S)
    for s in subs:
        await s.unsubscribe()

    spans = {s.name: s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)}
    run = spans["invoke_agent Helper"]
    assert run.parent is not None and run.parent.span_id == int(PARENT_ID, 16)
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat m-trace"]
    assert len(chats) == 2
    assert all(c.parent is not None and c.parent.span_id == run.context.span_id for c in chats)
    first = min(chats, key=lambda s: s.start_time or 0)
    attrs = dict(first.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "m-trace"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (12, 4)
    tool = spans["execute_tool calculator"]
    assert tool.parent is not None and tool.parent.span_id == run.context.span_id
    # Each UsageRecorded carries its own model call's span as the parent for billing.
    parents = [hd["traceparent"].split("-")[2] for hd in usage_headers]
    assert sorted(parents) == sorted(format(c.context.span_id, "016x") for c in chats)
    assert all(hd["traceparent"].split("-")[1] == TRACE_ID for hd in usage_headers)
    assert [hd["Nats-Msg-Id"] for hd in usage_headers] == [f"{req.run_id}:0", f"{req.run_id}:1"]
