"""One chat request with a tool call is one trace across the four services, and the runner's spans follow
the OpenTelemetry GenAI semantic conventions: ``invoke_agent`` → ``chat`` (per model call, with the fake
LLM's response id, finish reasons and usage) and ``execute_tool``, billing's ledger write under each
model call. Message content is on no span by default, and on the runner's spans with capture on."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import StackHandle, own_stack
from tests.e2e.otlp import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.e2e

CAPTURE_ENV = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"
#: What the fake LLM reports for each model call, as the provider's usage (prompt tokens include the cache).
FIRST_USAGE = {"prompt_tokens": 40, "cache_read_tokens": 8, "output_tokens": 12}
SECOND_USAGE = {"prompt_tokens": 60, "cache_read_tokens": 30, "cache_write_tokens": 10, "output_tokens": 9}
FINISH = {"openai": (("tool_calls",), ("stop",)), "anthropic": (("tool_use",), ("end_turn",))}
RESPONSE_ID = {"openai": re.compile(r"chatcmpl-fake\d+"), "anthropic": re.compile(r"msg_fake\d+")}


class Markers:
    """Words that appear only in this request's content: the prompt, the tool's arguments and result, the answer."""

    def __init__(self) -> None:
        self.prompt = f"prompt{secrets.token_hex(6)}"
        self.operand = 700_000_000 + secrets.randbelow(99_999_999)
        self.result = str(self.operand + 1)
        self.answer = f"answer{secrets.token_hex(6)}"

    def all(self) -> list[str]:
        return [self.prompt, str(self.operand), self.result, self.answer]


async def _traced_chat(
    stack: StackHandle, provider: str, receiver: OtlpReceiver
) -> tuple[Any, str, list[ReceivedSpan], Markers]:
    """Run one chat request whose model calls the calculator once, then answers; wait for its whole trace."""
    agent = stack.agent(provider, tools=["calculator"])
    marks = Markers()
    await stack.fake.script(
        agent.model,
        [
            {
                "tool_calls": [{"name": "calculator", "arguments": {"expression": f"{marks.operand}+1"}}],
                "usage": FIRST_USAGE,
            },
            {"text": f"It is {marks.answer}.", "usage": SECOND_USAGE},
        ],
    )
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    async with stack.client() as client:
        completion = await client.chat.completions.create(
            model=agent.id,
            messages=[{"role": "user", "content": f"Add one to {marks.operand}, say {marks.prompt}."}],
            extra_headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
        )
    assert completion.choices[0].message.content == f"It is {marks.answer}."

    def complete() -> bool:
        spans = receiver.spans_of(trace_id)
        # Each service exports its spans in batches, in the order they ended: a service's last span
        # (the gateway's request, the runner's run) arriving means its earlier ones did. Billing writes
        # each model call's usage and the run's close: wait for all three.
        names = {(s.service, s.name) for s in spans}
        return (
            ("gateway", "POST /v1/chat/completions") in names
            and ("runner", f"invoke_agent agent {agent.model}") in names
            and "catalog" in {s.service for s in spans}
            and sum(s.name == "ledger.write" for s in spans) >= 3
        )

    assert receiver.wait_for(complete, timeout=20), _dump(receiver.spans_of(trace_id))
    return agent, client_span, receiver.spans_of(trace_id), marks


def _dump(spans: list[ReceivedSpan]) -> str:
    return "\n".join(f"{s.service} {s.kind} {s.name!r} {s.span_id}<-{s.parent_span_id} {s.attributes}" for s in spans)


def _one(spans: list[ReceivedSpan], service: str, name: str) -> ReceivedSpan:
    found = [s for s in spans if s.service == service and s.name == name]
    assert len(found) == 1, f"{service} {name!r}: {len(found)} spans\n{_dump(spans)}"
    return found[0]


def _content_in(spans: list[ReceivedSpan], marks: Markers) -> list[tuple[str, str, str]]:
    """(span, attribute, marker) for every attribute (span or event) that holds a piece of the content."""
    found = []
    for s in spans:
        for attributes in (s.attributes, *s.event_attributes):
            for key, value in attributes.items():
                text = json.dumps(value, default=str)
                found += [(s.name, key, m) for m in marks.all() if m in text]
    return found


async def test_a_chat_with_a_tool_is_one_trace_of_genai_spans(
    e2e: StackHandle, provider: str, otlp_receiver: OtlpReceiver
) -> None:
    agent, client_span, spans, marks = await _traced_chat(e2e, provider, otlp_receiver)

    # The gateway's HTTP span continues the client's trace; the catalog and billing answer inside it.
    http = _one(spans, "gateway", "POST /v1/chat/completions")
    assert (http.kind, http.parent_span_id) == ("SERVER", client_span)
    assert http.attributes["http.route"] == "/v1/chat/completions"
    assert http.attributes["http.response.status_code"] == 200
    # The agent is new, so the gateway asks the catalog whether the caller may use it (the key's answer
    # may be cached from an earlier request).
    access = [s for s in spans if s.service == "catalog" and s.name.endswith(".catalog.agent.access.v1 process")]
    assert len(access) == 1, _dump(spans)
    assert (access[0].kind, access[0].parent_span_id) == ("CONSUMER", http.span_id)
    admit = _one(spans, "billing", "billing.admit")
    assert (admit.kind, admit.parent_span_id) == ("CONSUMER", http.span_id)
    assert admit.attributes["messaging.system"] == "nats"

    # The run, under the gateway's span.
    run = _one(spans, "runner", f"invoke_agent agent {agent.model}")
    assert run.kind == "INTERNAL" and run.status == "UNSET"
    assert run.parent_span_id == http.span_id, _dump(spans)
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["gen_ai.agent.id"] == agent.id
    assert run.attributes["gen_ai.agent.name"] == f"agent {agent.model}"
    assert run.attributes["gen_ai.provider.name"] == provider
    assert run.attributes["gen_ai.request.model"] == agent.model
    assert run.attributes["gen_ai.usage.input_tokens"] == FIRST_USAGE["prompt_tokens"] + SECOND_USAGE["prompt_tokens"]
    assert run.attributes["gen_ai.usage.output_tokens"] == FIRST_USAGE["output_tokens"] + SECOND_USAGE["output_tokens"]

    # Each model call: a CLIENT span with what the fake LLM answered.
    chats = sorted(
        (s for s in spans if s.name == f"chat {agent.model}"), key=lambda s: s.attributes["gen_ai.usage.input_tokens"]
    )
    assert len(chats) == 2, _dump(spans)
    for chat, usage, finish in zip(chats, (FIRST_USAGE, SECOND_USAGE), FINISH[provider], strict=True):
        a = chat.attributes
        assert (chat.service, chat.kind, chat.parent_span_id) == ("runner", "CLIENT", run.span_id)
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.provider.name"] == provider
        assert a["gen_ai.request.model"] == a["gen_ai.response.model"] == agent.model
        assert a["gen_ai.request.max_tokens"] > 0
        assert RESPONSE_ID[provider].fullmatch(a["gen_ai.response.id"]), a["gen_ai.response.id"]
        assert a["gen_ai.response.finish_reasons"] == finish
        assert a["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
        assert a["gen_ai.usage.output_tokens"] == usage["output_tokens"]
        assert a["gen_ai.usage.cache_read.input_tokens"] == usage["cache_read_tokens"]
        assert a.get("gen_ai.usage.cache_creation.input_tokens", 0) == usage.get("cache_write_tokens", 0)
        assert a["switchboard.usage.estimated"] is False
        assert a["server.address"] == "127.0.0.1"
        # Billing's consumption of the call's usage continues the call's span.
        ledger = [s for s in spans if s.name == "ledger.write" and s.parent_span_id == chat.span_id]
        assert [(s.service, s.kind) for s in ledger] == [("billing", "CONSUMER")], _dump(spans)
    assert chats[0].attributes["gen_ai.response.id"] != chats[1].attributes["gen_ai.response.id"]

    # The run's close settles its reservation, under the run's span.
    closed = [s for s in spans if s.name == "ledger.write" and s.parent_span_id == run.span_id]
    assert [s.attributes["messaging.destination.name"].endswith(".usage.run.closed.v1") for s in closed] == [True]

    tool = _one(spans, "runner", "execute_tool calculator")
    assert (tool.kind, tool.parent_span_id, tool.status) == ("INTERNAL", run.span_id, "UNSET")
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "calculator"
    assert tool.attributes["gen_ai.tool.type"] == "function"
    assert tool.attributes["gen_ai.tool.call.id"]

    # No content on any span of any service: not the prompt, the tool's arguments or result, the answer.
    assert _content_in(otlp_receiver.spans, marks) == []


@pytest.fixture(scope="module")
def capturing(
    tmp_path_factory: pytest.TempPathFactory,
    nats_url: str,
    postgres_url: str,
    redis_url: str,
    otlp_receiver: OtlpReceiver,
) -> Iterator[StackHandle]:
    """A stack of its own whose runner captures message content."""
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, CAPTURE_ENV: "true"}
    with own_stack(tmp_path_factory.mktemp("capturing"), nats_url, postgres_url, redis_url, env=env) as handle:
        yield handle


async def test_content_is_on_the_runner_spans_when_capture_is_on(
    capturing: StackHandle, otlp_receiver: OtlpReceiver
) -> None:
    agent, _, spans, marks = await _traced_chat(capturing, "openai", otlp_receiver)
    chats = sorted(
        (s for s in spans if s.name == f"chat {agent.model}"), key=lambda s: s.attributes["gen_ai.usage.input_tokens"]
    )
    first, second = (c.attributes for c in chats)
    sent = json.loads(first["gen_ai.input.messages"])
    assert sent[0]["role"] == "system" and sent[-1]["role"] == "user"
    assert marks.prompt in sent[-1]["parts"][0]["content"]
    [answer] = json.loads(first["gen_ai.output.messages"])
    assert answer["finish_reason"] == "tool_calls"
    assert answer["parts"][0]["arguments"] == {"expression": f"{marks.operand}+1"}
    resent = json.loads(second["gen_ai.input.messages"])
    assert resent[-1]["parts"][0]["response"] == marks.result
    assert json.loads(second["gen_ai.output.messages"])[0]["parts"] == [
        {"type": "text", "content": f"It is {marks.answer}."}
    ]
    tool = _one(spans, "runner", "execute_tool calculator")
    assert tool.attributes["gen_ai.tool.call.result"] == marks.result
    assert str(marks.operand) in tool.attributes["gen_ai.tool.call.arguments"]
    # Only the runner's spans carry it.
    assert {name for name, _, _ in _content_in(spans, marks)} == {f"chat {agent.model}", "execute_tool calculator"}
