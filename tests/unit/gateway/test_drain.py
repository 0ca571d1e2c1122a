"""The gateway's drain: uvicorn's graceful-shutdown limit is never shorter than asked, never unlimited."""

from __future__ import annotations

import pytest

from gateway.drain import graceful_timeout


@pytest.mark.parametrize(("drain_s", "limit"), [(0, 0), (0.2, 1), (1, 1), (2.5, 3), (20, 20)])
def test_graceful_timeout_rounds_up_and_keeps_zero(drain_s: float, limit: int) -> None:
    assert graceful_timeout(drain_s) == limit
