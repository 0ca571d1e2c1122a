"""A namespace's streams are found and deleted on a real JetStream server, over every page of its list."""

from __future__ import annotations

import pytest
from nats.js.api import StorageType, StreamConfig

from devstack.natsclean import all_streams, delete_namespace_streams

pytestmark = pytest.mark.integration

#: Enough streams of another namespace that the server's list needs two pages (it answers 256 a page).
OTHERS = 260


async def test_a_namespace_loses_its_streams_and_stores_and_no_others(nats_client, namespace: str) -> None:
    js = nats_client.jetstream()
    other = f"{namespace}x"  # another namespace, whose name starts like this one's
    mine = [f"{namespace}_RUNS", f"KV_{namespace}_STATE", f"OBJ_{namespace}_RESPONSES"]
    theirs = [f"{other}_S{i}" for i in range(OTHERS)]
    for name in theirs + mine:  # ours last: on the list's second page
        await js.add_stream(StreamConfig(name=name, subjects=[f"{name}.>"], storage=StorageType.MEMORY))
    try:
        names = {i.config.name for i in await all_streams(js)}
        assert set(mine) | set(theirs) <= names, "every page of the list is read"

        assert await delete_namespace_streams(js, namespace) == len(mine)
        names = {i.config.name for i in await all_streams(js)}
        assert not set(mine) & names
        assert set(theirs) <= names
        assert await delete_namespace_streams(js, namespace) == 0
    finally:
        await delete_namespace_streams(js, other)
