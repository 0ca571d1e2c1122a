"""One trace spans gateway → catalog → billing → runner for one request (spans exported by OTLP/HTTP)."""

from __future__ import annotations

import secrets
from typing import Any

import pytest

from tests.e2e.conftest import StackHandle
from tests.e2e.otlp import OtlpReceiver

pytestmark = pytest.mark.e2e


async def test_one_trace_spans_all_four_services(e2e: StackHandle, client: Any, otlp_receiver: OtlpReceiver) -> None:
    agent = e2e.agent("openai")
    await e2e.fake.script(agent.model, [{"text": "Traced.", "usage": {"prompt_tokens": 4, "output_tokens": 2}}])
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"

    completion = await client.chat.completions.create(
        model=agent.id,
        messages=[{"role": "user", "content": "Trace me."}],
        extra_headers={"traceparent": traceparent},
    )
    assert completion.choices[0].message.content == "Traced."

    # The agent is new, so the gateway asks the catalog about it: the catalog's span must be in the
    # request's trace too (the request/reply client carries the trace context on every call).
    wanted = {"gateway", "catalog", "billing", "runner"}
    arrived = otlp_receiver.wait_for(lambda: wanted <= otlp_receiver.services_of(trace_id), timeout=15)
    assert arrived, f"services seen in the trace: {otlp_receiver.services_of(trace_id)}"
