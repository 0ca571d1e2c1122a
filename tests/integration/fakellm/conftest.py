"""The fake LLM server, started on a free port for one test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fakellm.server import FakeLLM


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    server = FakeLLM()
    await server.start()
    yield server
    await server.stop()
