"""Which streams count as a throw-away namespace's, and which stale ones a session start removes."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from devstack.natsclean import delete_stale_throwaway_streams, owned_by


def test_a_namespace_owns_its_streams_and_stores_only() -> None:
    assert owned_by("t0123456789_RUNS", "t0123456789")
    assert owned_by("KV_t0123456789_X", "t0123456789")
    assert owned_by("OBJ_t0123456789_RESPONSES", "t0123456789")
    assert not owned_by("t0123456789x_RUNS", "t0123456789")
    assert not owned_by("OBJ_t0123456789x_RESPONSES", "t0123456789")


class FakeJetStream:
    def __init__(self, streams: dict[str, float]) -> None:
        self.streams = streams
        self.deleted: list[str] = []

    async def streams_info(self, offset: int = 0) -> list[Any]:
        names = sorted(self.streams)[offset : offset + 2]  # tiny pages: the paging is exercised too
        return [
            SimpleNamespace(config=SimpleNamespace(name=n), created=datetime.fromtimestamp(self.streams[n], UTC))
            for n in names
        ]

    async def delete_stream(self, name: str) -> bool:
        self.deleted.append(name)
        return True


async def test_only_old_streams_of_throwaway_namespaces_are_removed() -> None:
    now = time.time()
    js = FakeJetStream(
        {
            "t0123456789_RUNS": now - 7200,  # a test's, two hours old
            "OBJ_e2e01234567_RESPONSES": now - 7200,  # an end-to-end stack's object store
            "bench012345_USAGE": now - 7200,
            "t0123456789_USAGE": now - 60,  # a live test's
            "switchboard_RUNS": now - 7200,  # a real deployment's
            "tenant_RUNS": now - 7200,  # starts with "t", but is no test's
            "OBJ_switchboard_RESPONSES": now - 7200,
        }
    )
    assert await delete_stale_throwaway_streams(js, 3600) == 3  # type: ignore[arg-type]
    assert sorted(js.deleted) == ["OBJ_e2e01234567_RESPONSES", "bench012345_USAGE", "t0123456789_RUNS"]
