"""The runner's MCP sessions and tool lists, shared by every run of the process.

A session is kept per server — per server and user when its headers name ``{{user_id}}`` (then the
sessions of one server are capped, the least recently used closed first) — and reused across runs;
one found broken is replaced at its next use. A server's tool list is reused for ``tools_ttl_s``; a
server that could not be listed is not asked again for a few seconds (runs starting meanwhile hear
the same "unavailable" at once instead of each waiting for the server's timeout).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import mcp_types

from .config import McpServerConfig
from .session import McpSession, McpUnavailable, describe

log = logging.getLogger(__name__)

#: Sessions kept per server whose headers name the user (each user's own); the oldest used is closed.
MAX_USER_SESSIONS = 64
#: How long a failed listing is remembered (at most the tools TTL).
FAILURE_TTL_S = 5.0


@dataclass
class _Listing:
    tools: list[mcp_types.Tool] | None
    error: McpUnavailable | None
    expires_at: float


class McpPool:
    """Sessions and tool lists for ``servers``; :meth:`close` ends every session."""

    def __init__(
        self,
        servers: dict[str, McpServerConfig],
        *,
        tools_ttl_s: float = 60.0,
        max_user_sessions: int = MAX_USER_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = servers
        self._ttl = tools_ttl_s
        self._max_user_sessions = max_user_sessions
        self._clock = clock
        self._sessions: OrderedDict[tuple[str, str], McpSession] = OrderedDict()
        self._listings: dict[tuple[str, str], _Listing] = {}
        self._locks: dict[tuple[str, ...], asyncio.Lock] = {}
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        #: Sessions opened so far (a test reads it to see them reused).
        self.opened = 0

    def _key(self, server: str, user_id: str) -> tuple[str, str]:
        return (server, user_id if self.servers[server].per_user else "")

    def _lock(self, key: tuple[str, ...]) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock

    async def session(self, server: str, user_id: str) -> McpSession:
        """A live session with ``server`` for ``user_id`` (opened if needed), or :class:`McpUnavailable`."""
        if self._closed:
            raise McpUnavailable(f"MCP server {server!r}: the runner is stopping")
        key = self._key(server, user_id)
        found = self._sessions.get(key)
        if found is not None and found.alive:
            self._sessions.move_to_end(key)
            return found
        async with self._lock(key):
            found = self._sessions.get(key)
            if found is not None and found.alive:
                return found
            if found is not None:
                self._drop(key)
            config = self.servers[server]
            session = McpSession(config, config.headers_for(user_id))
            await session.open()
            self.opened += 1
            self._sessions[key] = session
            self._evict(server)
            return session

    def _drop(self, key: tuple[str, str]) -> None:
        session = self._sessions.pop(key, None)
        if session is not None:
            # Closing waits for the server's goodbye: not on the caller's path (but awaited by close()).
            task = asyncio.get_running_loop().create_task(session.close(), name="mcp-session-close")
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _evict(self, server: str) -> None:
        """Keep a per-user server's sessions within the cap, and forget what users without one left
        (their tool lists, their locks), so memory follows the sessions kept, not every user seen."""
        if not self.servers[server].per_user:
            return
        mine = [k for k in self._sessions if k[0] == server]
        for key in mine[: max(0, len(mine) - self._max_user_sessions)]:
            self._drop(key)
        for key in [k for k in self._listings if k[0] == server and k not in self._sessions]:
            del self._listings[key]
        for lock_key in [k for k in self._locks if k[-2] == server and k[-2:] not in self._sessions]:
            if not self._locks[lock_key].locked():
                del self._locks[lock_key]

    async def tools(self, server: str, user_id: str) -> list[mcp_types.Tool]:
        """The tools ``server`` lists for ``user_id`` (reused for the TTL), or :class:`McpUnavailable`."""
        key = self._key(server, user_id)
        listing = self._listings.get(key)
        if listing is None or listing.expires_at <= self._clock():
            async with self._lock(("list", *key)):
                listing = self._listings.get(key)
                if listing is None or listing.expires_at <= self._clock():
                    listing = await self._list(server, user_id)
                    self._listings[key] = listing
        if listing.tools is None:
            assert listing.error is not None
            raise listing.error
        return listing.tools

    async def _list(self, server: str, user_id: str) -> _Listing:
        now = self._clock()
        try:
            for attempt in (1, 2):
                session = await self.session(server, user_id)
                try:
                    tools = await session.list_tools()
                    return _Listing(tools, None, now + self._ttl)
                except McpUnavailable:
                    # Listing is safe to repeat: once more on a new session (the old one was stale).
                    if attempt == 2 or not session.broken:
                        raise
        except McpUnavailable as exc:
            log.info("MCP server %s could not be listed: %s", server, exc)
            return _Listing(None, exc, now + min(FAILURE_TTL_S, self._ttl))
        except Exception as exc:
            # A listing the SDK cannot read (a server off the protocol): the run goes on without it.
            log.warning("MCP server %s: its tool list is unusable", server, exc_info=True)
            failed = McpUnavailable(f"MCP server {server!r} answered a tool list that cannot be read ({describe(exc)})")
            return _Listing(None, failed, now + min(FAILURE_TTL_S, self._ttl))
        raise AssertionError("unreachable")

    def known_tools(self, server: str) -> list[str] | None:
        """The MCP names of ``server``'s tools as last listed, ``None`` when unknown (never listed, down, or
        depending on the user)."""
        if self.servers[server].per_user:
            return None
        listing = self._listings.get((server, ""))
        return None if listing is None or listing.tools is None else [t.name for t in listing.tools]

    async def close(self) -> None:
        """End every session (each tells its server), at once and in parallel."""
        self._closed = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), *self._closing, return_exceptions=True)
