"""The runner's heartbeat: about once a second, "I am alive, and here is how far each of my runs has got"
(:class:`contracts.RunnerHeartbeat` on ``runner.heartbeat.v1``, core NATS, the runner id also in the
:data:`contracts.RUNNER_ID_HEADER` header).

Every heartbeat also names the runner's provider connections, tools and MCP servers (with their
tools' names where known, within a budget): the catalog refuses an agent that names one no live
runner has. Gateways read only the header (a runner that falls silent fails its
streams); billing reads the runs (a runner silent for ``BILLING_RUNNER_LOST_S`` is dead: billing
records each call it had in flight from the last progress heard, estimated, and closes its runs,
releasing their holds). What can be lost when a runner dies is therefore bounded by one heartbeat: the
progress since the last one.

The progress is read from what each run's loop keeps anyway (:meth:`runner.agent.AgentRun.progress`),
once per beat: nothing is added to the per-token path but a counter.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

import nats.errors
from nats.aio.client import Client

from contracts import RUNNER_ID_HEADER, RunnerHeartbeat, RunProgress
from contracts.fleet import McpServers

log = logging.getLogger(__name__)

#: At most this many runs in one message …
MAX_RUNS_PER_MESSAGE = 1000
#: … and at most this share of the server's payload limit (room for headers and the envelope).
PAYLOAD_SHARE = 0.75
_RUNS_FIELD = b'"runs":[]'


def heartbeat_messages(
    runner_id: str,
    interval_s: float,
    runs: Sequence[RunProgress],
    *,
    max_bytes: int,
    max_runs: int = MAX_RUNS_PER_MESSAGE,
    connections: Sequence[str] | None = None,
    tools: Sequence[str] | None = None,
    mcp_servers: McpServers | None = None,
) -> list[bytes]:
    """The heartbeat of ``runs`` as encoded :class:`RunnerHeartbeat` messages (``part`` of ``parts``),
    each holding at most ``max_runs`` runs and, where one run allows it, at most ``max_bytes`` bytes.

    Each run is encoded once; its bytes are spliced into the envelope's ``runs`` array. Every part
    carries the runner's ``connections``, ``tools`` and ``mcp_servers`` (names: the catalog checks
    agents by them)."""
    encoded = [r.model_dump_json().encode() for r in runs]
    groups: list[list[bytes]] = [[]]
    size = 0
    announced = {
        "connections": list(connections) if connections is not None else None,
        "tools": list(tools) if tools is not None else None,
    }
    mcp_size = sum(len(k) + 8 + sum(len(t) + 3 for t in v or ()) for k, v in (mcp_servers or {}).items())
    # The envelope: id, ts, runner id, interval, part, parts, and the names announced.
    names_size = sum(len(n) + 3 for names in announced.values() for n in names or ()) + mcp_size
    budget = max(1, max_bytes - 512 - names_size)
    for item in encoded:
        group = groups[-1]
        if group and (len(group) >= max_runs or size + len(item) + 1 > budget):
            groups.append([])
            size = 0
        groups[-1].append(item)
        size += len(item) + 1
    out = []
    for part, group in enumerate(groups):
        envelope = RunnerHeartbeat(
            runner_id=runner_id,
            interval_s=interval_s,
            part=part,
            parts=len(groups),
            mcp_servers=mcp_servers,
            **announced,
        )
        data = envelope.model_dump_json().encode()
        # The key with bare quotes occurs once: a string value holds a '"' only escaped.
        out.append(data.replace(_RUNS_FIELD, b'"runs":[' + b",".join(group) + b"]", 1))
    return out


class Heartbeat:
    """Publishes the runner's heartbeat every ``interval_s`` until stopped (then one last, empty one:
    a runner stopping on purpose leaves nothing for billing to close)."""

    def __init__(
        self,
        nc: Client,
        subject: str,
        runner_id: str,
        interval_s: float,
        runs: Callable[[], Iterable[RunProgress]],
        *,
        connections: Sequence[str] | None = None,
        tools: Sequence[str] | None = None,
        mcp_servers: Callable[[], McpServers] | None = None,
    ) -> None:
        self._nc = nc
        self._subject = subject
        self._runner_id = runner_id
        self._interval_s = interval_s
        self._runs = runs
        self._connections = sorted(connections) if connections is not None else None
        self._tools = sorted(tools) if tools is not None else None
        # Read at every beat: a server's tools become known (or unknown) while the runner lives.
        self._mcp_servers = mcp_servers
        self._task: asyncio.Task[None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._beat(), name="runner-heartbeat")

    async def stop(self) -> None:
        """Stop beating and say so: a last heartbeat with no runs."""
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        await self.publish([])

    async def publish(self, runs: Sequence[RunProgress]) -> None:
        """One heartbeat of ``runs`` (several messages when they do not fit in one)."""
        max_bytes = int((self._nc.max_payload or 1024 * 1024) * PAYLOAD_SHARE)
        headers = {RUNNER_ID_HEADER: self._runner_id}
        messages = heartbeat_messages(
            self._runner_id,
            self._interval_s,
            runs,
            max_bytes=max_bytes,
            connections=self._connections,
            tools=self._tools,
            mcp_servers=self._mcp_servers() if self._mcp_servers is not None else None,
        )
        for data in messages:
            try:
                await self._nc.publish(self._subject, data, headers=headers)
            except nats.errors.Error as exc:
                # Disconnected (closed, draining …): the next beat tries again; the listeners' bound
                # is several beats, so one missed is no death.
                log.warning("heartbeat not sent (%s)", type(exc).__name__)
                return
        self.sent += 1

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            try:
                await self.publish(list(self._runs()))
            except Exception:
                log.exception("heartbeat failed; the next one is in %.1f s", self._interval_s)
            # A fixed rhythm: a slow beat does not push the next one later.
            next_at = max(next_at + self._interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
