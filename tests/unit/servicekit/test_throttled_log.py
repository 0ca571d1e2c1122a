"""Lines that repeat in an outage: one each, the same kind at most every 10 s, with a count."""

from __future__ import annotations

import logging

import pytest

from servicekit.throttledlog import EVERY_S, ThrottledLog
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def test_an_outage_is_a_few_lines_not_a_page_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100.0)
    lines = ThrottledLog(logging.getLogger("t.throttled"), clock=clock)
    refused = ConnectionRefusedError(111, "Connect call failed")
    with caplog.at_level(logging.ERROR, logger="t.throttled"):
        for _ in range(40):  # ten seconds of reconnect attempts, four a second
            lines.log(logging.ERROR, "refused", "NATS reported: %s", refused)
            clock.now += 0.25
        lines.log(logging.ERROR, "refused", "NATS reported: %s", refused)
        lines.log(logging.ERROR, "timeout", "NATS reported: %s", "flush")  # another kind: its own line
    assert [r.getMessage() for r in caplog.records] == [
        "NATS reported: [Errno 111] Connect call failed",
        "NATS reported: [Errno 111] Connect call failed (and 39 more like it since the last such line)",
        "NATS reported: flush",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert EVERY_S == 10.0
