"""A service's NATS connection says when it is cut off, not when the service closes it."""

from __future__ import annotations

import logging

import pytest

from servicekit.natsio import connect

pytestmark = pytest.mark.integration


async def test_closing_on_purpose_is_not_reported_as_a_disconnection(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="servicekit.natsio"):
        nc = await connect(nats_url, "test")
        await nc.close()
    assert "disconnected from NATS" not in caplog.text
