"""The runner's side of the request id: its log records about a run name the client's request, and a
failed run is logged once with who, what and the provider's own error — which the client never sees."""

from __future__ import annotations

import logging

import pytest

from runner.errors import STREAM_BROKEN_MESSAGE

from .conftest import Harness, make_request

pytestmark = pytest.mark.integration


async def test_a_broken_stream_is_told_plainly_and_logged_with_the_request_id(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await harness.script("m-rid", [{"text": "one two three four five six", "fail_after": 3}])
    request = make_request("m-rid", request_id="req-from-client-1")
    got = await harness.run(request)
    failed = got.events[-1]
    assert failed.type == "failed"
    assert failed.error.message == STREAM_BROKEN_MESSAGE
    assert failed.detail  # the provider's own error travels to the gateway's log
    assert failed.detail not in failed.error.message
    records = [r for r in caplog.records if r.name.startswith("runner") and request.run_id in r.getMessage()]
    failures = [r for r in records if "failed" in r.getMessage()]
    assert len(failures) == 1
    [record] = failures
    assert getattr(record, "request_id", None) == "req-from-client-1"
    text = record.getMessage()
    for part in ("u1", "agent_1", "openai", "provider_error", failed.detail):
        assert part in text, (part, text)
