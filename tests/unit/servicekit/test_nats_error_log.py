"""NATS's errors as log lines: one line each, no traceback, the same kind at most every 10 s."""

from __future__ import annotations

import logging

import pytest

from servicekit.natsio import ERROR_LOG_EVERY_S, _ErrorLog
from tests.support.clock import Clock

pytestmark = pytest.mark.unit


def test_an_outage_is_a_few_lines_not_a_page_a_second(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(100.0)
    errors = _ErrorLog(clock)
    with caplog.at_level(logging.ERROR, logger="servicekit.natsio"):
        for _ in range(40):  # ten seconds of reconnect attempts, four a second
            errors.log(ConnectionRefusedError(111, "Connect call failed"))
            clock.now += 0.25
        errors.log(ConnectionRefusedError(111, "Connect call failed"))
        errors.log(TimeoutError("flush"))  # another kind: its own line
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "NATS reported: ConnectionRefusedError: [Errno 111] Connect call failed",
        "NATS reported: ConnectionRefusedError: [Errno 111] Connect call failed "
        "(and 39 more like it since the last such line)",
        "NATS reported: TimeoutError: flush",
    ]
    assert all(r.exc_info is None for r in caplog.records)  # no traceback
    assert ERROR_LOG_EVERY_S == 10.0
