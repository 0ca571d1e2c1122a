"""A run's failure is logged once, however many times its ``failed`` event reaches the gateway."""

from __future__ import annotations

import logging

import pytest

from contracts import ErrorInfo, RunFailed, RunStarted, Subjects, TextDelta
from gateway import runlog
from gateway.runs import RunStream

pytestmark = pytest.mark.unit

RUN = "chatcmpl-twice"


class ScriptedRecovery(RunStream):
    """A run whose RUN_EVENTS read finds one more missing event each time it is asked."""

    def __init__(self, missing: list[TextDelta]) -> None:
        super().__init__(None, Subjects("t"), RUN)  # type: ignore[arg-type]
        self.missing = missing

    async def _recover(self) -> None:
        if self.missing:
            event = self.missing.pop(0)
            self._ahead.setdefault(event.seq, event)


async def deliver(run: RunStream, *events: object) -> None:
    for event in events:
        run._on_data(event.model_dump_json().encode())


async def test_a_failed_event_seen_twice_ahead_of_its_turn_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    error = ErrorInfo(status=502, type="server_error", message="The provider failed.", code="provider_error")
    failed = RunFailed(run_id=RUN, seq=3, error=error, detail="HTTP 500 from upstream")
    # Core NATS lost seq 1 and 2; the runner sent its recent events again after a reconnect, so the
    # failure arrives twice while the gap is still being filled from RUN_EVENTS.
    run = ScriptedRecovery([TextDelta(run_id=RUN, seq=1, delta="a"), TextDelta(run_id=RUN, seq=2, delta="b")])
    runlog.started(RUN, "u_1", "agent_1", "openai")
    await deliver(run, RunStarted(run_id=RUN, seq=0, runner_id="r1"), failed, failed)
    caplog.set_level(logging.INFO, logger="gateway.runs")
    seen = [(await run.next(5)).type for _ in range(4)]
    assert seen == ["started", "text_delta", "text_delta", "failed"]
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.runs"]
    assert len(lines) == 1, lines
    assert f"run {RUN} failed: user=u_1 agent=agent_1 provider=openai" in lines[0]
    assert "HTTP 500 from upstream" in lines[0]
