"""Removing a namespace's JetStream streams: what a test, a benchmark or a throw-away stack leaves behind.

A namespace ``ns`` owns the streams named ``ns_…`` and the streams behind its key-value and object
stores (``KV_ns_…``, ``OBJ_ns_…``). Every stream is listed, page by page: the server answers at
most 256 per request, and a cleanup that reads one page misses streams once more exist (leaked
streams then pile up until their reserved bytes exhaust the server's storage).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from nats.js.errors import NotFoundError

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from nats.js.api import StreamInfo

#: The namespaces tests and benchmarks make: a short tag and random hex digits (``t3fa9…``, ``e2e…``).
THROWAWAY_NAMESPACE = re.compile(r"(t[0-9a-f]{10}|e2e[0-9a-f]{8}|img[0-9a-f]{8}|bench[0-9a-f]{6,8})")


def owned_by(stream: str, namespace: str) -> bool:
    """Whether ``stream`` belongs to ``namespace`` (its own streams, its key-value and object stores)."""
    return stream.startswith((f"{namespace}_", f"KV_{namespace}_", f"OBJ_{namespace}_"))


async def all_streams(js: JetStreamContext) -> list[StreamInfo]:
    """Every stream of the account, through as many pages as the server needs."""
    out: list[StreamInfo] = []
    while True:
        page = await js.streams_info(offset=len(out))
        if not page:
            return out
        out.extend(page)


async def _delete(js: JetStreamContext, name: str) -> bool:
    try:
        return bool(await js.delete_stream(name))
    except NotFoundError:  # another cleanup got there first
        return False


async def delete_namespace_streams(js: JetStreamContext, namespace: str) -> int:
    """Delete every stream ``namespace`` owns; how many."""
    names = [i.config.name for i in await all_streams(js) if i.config.name and owned_by(i.config.name, namespace)]
    return sum([await _delete(js, name) for name in names])


def _namespace(stream: str) -> str:
    bare = stream.split("_", 1)[1] if stream.startswith(("KV_", "OBJ_")) else stream
    return bare.split("_", 1)[0]


async def delete_stale_throwaway_streams(js: JetStreamContext, older_than_s: float) -> int:
    """Delete streams of throw-away namespaces created more than ``older_than_s`` ago (runs that were
    killed before they cleaned up); streams of live runs, and every other stream, are left alone."""
    cutoff = time.time() - older_than_s
    deleted = 0
    for info in await all_streams(js):
        name = info.config.name or ""
        if not THROWAWAY_NAMESPACE.fullmatch(_namespace(name)) or info.created is None:
            continue
        if info.created.timestamp() < cutoff:
            deleted += await _delete(js, name)
    return deleted


async def clean_namespace(nats_url: str, namespace: str) -> int:
    """Connect to ``nats_url`` and delete every stream ``namespace`` owns; how many."""
    import nats

    nc = await nats.connect(servers=[u.strip() for u in nats_url.split(",")])  # a cluster: its servers
    try:
        return await delete_namespace_streams(nc.jetstream(), namespace)
    finally:
        await nc.drain()


async def clean_stale(nats_url: str, older_than_s: float) -> int:
    """Connect to ``nats_url`` and delete the stale streams of throw-away namespaces; how many."""
    import nats

    nc = await nats.connect(servers=[u.strip() for u in nats_url.split(",")])  # a cluster: its servers
    try:
        return await delete_stale_throwaway_streams(nc.jetstream(), older_than_s)
    finally:
        await nc.drain()
