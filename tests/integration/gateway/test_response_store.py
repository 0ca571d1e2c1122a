"""The response store against a real NATS object store: reads that race a replace, objects of many chunks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from nats.js.object_store import OBJ_DEFAULT_CHUNK_SIZE

from gateway.responses.store import ResponseStore, StoredResponse
from servicekit.natsio import ensure_object_store

pytestmark = pytest.mark.asyncio

#: Far longer than a read takes here: a read that waits for chunks that are gone fails the test.
TIMEOUT_S = 2.0


async def make_store(nats_client: Any, namespace: str) -> ResponseStore:
    objects = await ensure_object_store(nats_client.jetstream(), f"{namespace}_RESPONSES", ttl_s=600)
    return ResponseStore(objects, TIMEOUT_S)


def record(n: int, **fields: Any) -> StoredResponse:
    return StoredResponse(
        id="resp_1", owner="user_1", run_id="run_1", response={"status": "completed", "n": n}, **fields
    )


async def test_reads_while_a_response_is_replaced_get_one_version_or_the_next(nats_client: Any, namespace: str) -> None:
    store = await make_store(nats_client, namespace)
    await store.put(record(0))
    started = time.monotonic()
    for n in range(1, 31):
        # The replace purges the old version's chunks; reads that began before it must not wait for them.
        results = await asyncio.gather(store.put(record(n)), *(store.get("resp_1") for _ in range(4)))
        seen = {r.response["n"] for r in results[1:] if r is not None}
        assert None not in results[1:] and seen <= {n - 1, n}
    assert (await store.get("resp_1")).response["n"] == 30  # type: ignore[union-attr]
    assert time.monotonic() - started < 30 * TIMEOUT_S / 2  # no read waited out its timeout


async def test_a_response_of_many_chunks_reads_whole(nats_client: Any, namespace: str) -> None:
    store = await make_store(nats_client, namespace)
    items = [{"type": "message", "text": "x" * 1000 + str(i)} for i in range(3 * OBJ_DEFAULT_CHUNK_SIZE // 1000)]
    await store.put(record(1, input_items=items))
    info = await store._store.get_info("resp_1")
    assert (info.chunks or 0) >= 3
    got = await store.get("resp_1")
    assert got is not None and got.input_items == items


async def test_a_response_never_stored_or_deleted_is_none(nats_client: Any, namespace: str) -> None:
    store = await make_store(nats_client, namespace)
    assert await store.get("resp_never") is None
    await store.put(record(1))
    await store.delete("resp_1")
    assert await store.get("resp_1") is None


async def test_a_marker_written_in_one_chunk_reads_back(nats_client: Any, namespace: str) -> None:
    store = await make_store(nats_client, namespace)
    await store.create(StoredResponse(id="resp_2", owner="user_1", run_id="run_2", stored=False))
    got = await store.get("resp_2")
    assert got is not None and got.stored is False and got.owner == "user_1"
