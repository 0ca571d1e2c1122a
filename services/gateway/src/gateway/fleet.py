"""Which runners are alive: a runner that falls silent fails its streams within seconds.

Every runner publishes a heartbeat about once a second (:mod:`contracts.fleet`); the gateway reads
only the runner's id, from a header, never the body. A run is watched from its ``started`` event (which
names its runner) until it closes. A runner that has been heard and then says nothing for
``lost_after_s`` is taken for dead: each of its runs still open here ends with a ``runner_lost``
error (billing, hearing the same silence, bills the model calls in flight and releases their holds),
and that error is stored as the run's last event in RUN_EVENTS, where a retry of the run's
``Idempotency-Key`` finds it (:meth:`~gateway.runs.RunStream.record_failure`).
A runner never heard from (one that publishes no heartbeat) is left to the idle timeout.

When runners have been heard but none is alive now, :meth:`RunnerWatch.none_alive` lets a new
request fail at once with a 503 rather than wait out the queue timeout.

The other way round, the gateway announces itself (:func:`announce`, ``GATEWAY_HEARTBEAT_S``): a run
whose client waits on this process carries its id, and the runner cancels the run once it no longer
hears the gateway (a killed process): the client is gone, so the model's work would be billed for
nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from contracts import RUNNER_ID_HEADER, ErrorInfo, GatewayHeartbeat
from servicekit.silence import sweep_silence

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

    from .runs import RunStream

log = logging.getLogger(__name__)


def runner_lost(runner_id: str) -> ErrorInfo:
    return ErrorInfo(
        status=502,
        type="server_error",
        code="runner_lost",
        message="The agent runner executing this request stopped responding; what it had produced is billed. "
        "Try again.",
    )


class RunnerWatch:
    """The last heartbeat of every runner heard, and the open runs of each."""

    def __init__(self, lost_after_s: float = 3.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.lost_after_s = lost_after_s
        self._clock = clock
        self._last_seen: dict[str, float] = {}
        self._runs: dict[str, set[RunStream]] = {}
        self.lost_total = 0

    async def on_heartbeat(self, msg: Msg) -> None:
        runner = (msg.headers or {}).get(RUNNER_ID_HEADER)
        if runner:
            self._last_seen[runner] = self._clock()

    def watch(self, run: RunStream, runner_id: str) -> None:
        """Fail ``run`` if ``runner_id`` falls silent; ``run`` calls :meth:`unwatch` when it closes."""
        if runner_id:
            self._runs.setdefault(runner_id, set()).add(run)
            run.runner_id = runner_id

    def unwatch(self, run: RunStream) -> None:
        runs = self._runs.get(run.runner_id or "")
        if runs is not None:
            runs.discard(run)
            if not runs:
                del self._runs[run.runner_id or ""]

    def none_alive(self) -> bool:
        """Runners have been heard, and none within ``lost_after_s``."""
        if not self._last_seen:
            return False
        cutoff = self._clock() - self.lost_after_s
        return all(seen < cutoff for seen in self._last_seen.values())

    def sweep_once(self) -> int:
        """Fail the runs of every runner silent for ``lost_after_s``; how many runs failed."""
        cutoff = self._clock() - self.lost_after_s
        failed = 0
        for runner, seen in list(self._last_seen.items()):
            if seen >= cutoff:
                continue
            runs = self._runs.pop(runner, set())
            if runs:
                log.error("runner %s fell silent: failing its %d open runs", runner, len(runs))
            cause = f"runner {runner} sent no heartbeat for {self._clock() - seen:.1f} s (runner lost)"
            for run in runs:
                run.fail(runner_lost(runner), cause, record=True)
            failed += len(runs)
            self.lost_total += len(runs)
            if seen < cutoff - 60:  # long gone: forget it (a restarted runner comes back under a new id)
                del self._last_seen[runner]
        return failed

    def forgive(self) -> None:
        """This gateway could not hear (cut off from NATS, its loop stalled): every runner's clock
        starts again."""
        now = self._clock()
        for runner in self._last_seen:
            self._last_seen[runner] = max(self._last_seen[runner], now)

    async def sweep(self, hears: Callable[[], Awaitable[bool]], every_s: float = 0.25) -> None:
        """Run :meth:`sweep_once` forever (a task of the app's lifespan), judging silence only while
        this gateway can hear (:func:`servicekit.silence.sweep_silence`; ``hears``: a NATS round trip)."""
        await sweep_silence(
            every_s=every_s,
            lost_after_s=self.lost_after_s,
            hears=hears,
            forgive=self.forgive,
            act=self._sweep_logged,
        )

    def _sweep_logged(self) -> None:
        try:
            self.sweep_once()
        except Exception:  # a bug: logged, and the next sweep tries again
            log.exception("sweeping for lost runners failed")


def new_gateway_id() -> str:
    """This gateway process's id in its heartbeats and its runs (``RunRequest.gateway_id``)."""
    return f"gw-{socket.gethostname()[:40]}-{secrets.token_hex(4)}"


async def announce(nc: Client, subject: str, gateway_id: str, interval_s: float) -> None:
    """Publish this gateway's heartbeat every ``interval_s`` until cancelled (run as a task): runners
    cancel the runs whose client waits here once they stop hearing it (the process was killed)."""
    data = GatewayHeartbeat(gateway_id=gateway_id, interval_s=interval_s).model_dump_json().encode()
    while True:
        if nc.is_connected:
            with contextlib.suppress(Exception):  # a heartbeat lost is the next one's to make up
                await nc.publish(subject, data)
        await asyncio.sleep(interval_s)
