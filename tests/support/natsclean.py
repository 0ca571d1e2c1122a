"""Deleting a test namespace's JetStream streams once its test is over."""

from __future__ import annotations

from typing import Any

from nats.js.errors import NotFoundError


async def namespace_streams(js: Any, namespace: str) -> list[str]:
    """The streams of ``namespace``: its own (``<ns>_…``) and its object stores' (``OBJ_<ns>_…``), read
    over every page of the server's stream list (a page holds 256; a shared server holds more)."""
    prefixes = (f"{namespace}_", f"OBJ_{namespace}_")
    names: list[str] = []
    offset = 0
    while True:
        page = await js.streams_info(offset=offset)
        if not page:
            return names
        offset += len(page)
        names += [i.config.name for i in page if i.config.name and i.config.name.startswith(prefixes)]


async def delete_namespace_streams(js: Any, namespace: str) -> None:
    """Delete every stream of ``namespace`` (see :func:`namespace_streams`); one already gone (another
    cleanup got there first) is fine."""
    for name in await namespace_streams(js, namespace):
        try:
            await js.delete_stream(name)
        except NotFoundError:
            continue
