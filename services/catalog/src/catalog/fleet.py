"""What the runner fleet can serve, as the catalog hears it: the provider connections, tools and MCP
servers (with their tools, where known) each live runner announces in its heartbeat
(:class:`contracts.RunnerHeartbeat`), so that an agent naming one no runner has (``opneai``,
``web_serch``, ``mcp:gihtub``) is refused when it is written, not when it first runs.

Every catalog replica hears every runner (a plain subscription, no queue group) and keeps, per
runner, what it announced and when it was last heard. A runner silent for :data:`MISSED_BEATS` of its
own intervals (at least :data:`MIN_LOST_AFTER_S`) no longer counts. The known names are the union
over the live runners.

When nothing can be said — no live runner heard yet (a catalog that has just started, a fleet that is
down), or a live runner too old to announce — that kind of name is not checked: the agent is accepted
and a runner that cannot serve it still answers ``unknown_provider`` (or skips the tool) at run time.
Refusing instead would make agents impossible to create while the fleet restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import Capabilities
from contracts.fleet import McpServers, union, union_mcp

log = logging.getLogger(__name__)

#: A runner silent for this many of its own heartbeat intervals no longer counts …
MISSED_BEATS = 3
#: … and never sooner than this.
MIN_LOST_AFTER_S = 5.0
#: At most this many runners are remembered (a flood of made-up runner ids costs bounded memory).
MAX_RUNNERS = 10_000


class _Announcement(BaseModel):
    """What the catalog reads of a heartbeat (its runs are skipped)."""

    model_config = ConfigDict(extra="ignore")

    runner_id: str = Field(max_length=256)
    interval_s: float = Field(gt=0)
    connections: list[str] | None = None
    tools: list[str] | None = None
    mcp_servers: McpServers | None = None


@dataclass
class _Runner:
    connections: list[str] | None
    tools: list[str] | None
    lost_after_s: float
    heard_at: float
    mcp_servers: McpServers | None = None


@dataclass(frozen=True)
class LiveRunner:
    """One live runner's last announcement, as the operators' report shows it."""

    runner_id: str
    connections: list[str] | None
    tools: list[str] | None
    silent_s: float
    mcp_servers: McpServers | None = None


class FleetCapabilities:
    """The union of what live runners announce; fed by :meth:`on_heartbeat`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._runners: dict[str, _Runner] = {}

    def heard(
        self,
        runner_id: str,
        interval_s: float,
        connections: list[str] | None,
        tools: list[str] | None,
        mcp_servers: McpServers | None = None,
    ) -> None:
        if runner_id not in self._runners and len(self._runners) >= MAX_RUNNERS:
            self._forget_lost()
            if len(self._runners) >= MAX_RUNNERS:
                return
        lost_after = max(MIN_LOST_AFTER_S, MISSED_BEATS * interval_s)
        self._runners[runner_id] = _Runner(connections, tools, lost_after, self._clock(), mcp_servers)

    async def on_heartbeat(self, msg: Msg) -> None:
        """A NATS callback: one heartbeat (any part) of one runner."""
        try:
            beat = _Announcement.model_validate_json(msg.data)
        except ValidationError:
            log.warning("unreadable runner heartbeat ignored")
            return
        self.heard(beat.runner_id, beat.interval_s, beat.connections, beat.tools, beat.mcp_servers)

    def capabilities(self) -> Capabilities:
        """What the live runners serve (``None`` for a kind that cannot be checked: see the module)."""
        self._forget_lost()
        live = list(self._runners.values())
        return Capabilities(
            connections=union(r.connections for r in live),
            tools=union(r.tools for r in live),
            mcp_servers=union_mcp(r.mcp_servers for r in live),
            runners=len(live),
        )

    def live_runners(self) -> list[LiveRunner]:
        """Each live runner's last announcement, by runner id."""
        self._forget_lost()
        now = self._clock()
        return [
            LiveRunner(k, r.connections, r.tools, now - r.heard_at, r.mcp_servers)
            for k, r in sorted(self._runners.items())
        ]

    def _forget_lost(self) -> None:
        now = self._clock()
        for runner_id in [k for k, r in self._runners.items() if now - r.heard_at > r.lost_after_s]:
            del self._runners[runner_id]
