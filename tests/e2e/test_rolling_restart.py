"""Rolling restarts drop nothing: two gateways and two runners, each stopped by SIGTERM (as the kubelet
stops a pod), waited for, started again and waited for ready, one at a time, while 50 paced streams
run — every stream ends with its whole text and ``finish_reason: stop``, and every process exits 0
within its grace period.

The test's load balancer routes each new stream to a gateway whose ``/readyz`` answered 200 at its last
probe (every 0.1 s), as a balancer that health-checks readiness does. A gateway told to stop answers
503 at once and keeps serving for ``GATEWAY_ACCEPT_GRACE_S`` (what the chart's ``preStop`` wait does
in Kubernetes), so a stream routed to it in the moment before the balancer noticed is still served,
and new streams go to the other gateway while its open ones finish. A runner told to stop takes no
new run and finishes those it has (``RUNNER_DRAIN_S``), while the other runner takes the new ones.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import httpx2
import nats
import openai
import pytest

from contracts import Subjects
from devstack.procs import ManagedProcess
from devstack.seed import AdminClient
from devstack.stack import Stack
from tests.e2e.conftest import BILLING_ENV, RICH_CREDITS, set_price
from tests.e2e.fake import FakeLLM
from tests.support.stack import running_stack

# Four processes started again, each importing its whole service: minutes on a loaded machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

STREAMS = 50
#: Each stream: 20 words at 5 per second, about 4 s.
TEXT = " ".join(f"word{i}" for i in range(20))
TOKENS_PER_S = 5
DRAIN_S = 20
ACCEPT_GRACE_S = 2.0
#: As the chart computes terminationGracePeriodSeconds: the wait before the drain, the drain, 15 s.
GATEWAY_GRACE_S = ACCEPT_GRACE_S + DRAIN_S + 15
RUNNER_GRACE_S = DRAIN_S + 15
PROBE_EVERY_S = 0.1
#: A run pulled just before its runner heard SIGTERM may still start a moment after it (as this test
#: hears it, on a loaded machine); none later. A runner that kept pulling would start a run about every
#: 0.2 s until its drain ends, some 4 s after SIGTERM.
LATE_START_S = 2.5


@dataclass
class Handle:
    stack: Stack
    gateways: dict[str, str]  # process name → base URL
    api_key: str
    agent_id: str
    model: str


@pytest.fixture
def rolling(tmp_path: Path, nats_url: str, postgres_url: str, redis_url: str) -> Iterator[Handle]:
    with running_stack(
        tmp_path / "stack",
        nats_url=nats_url,
        postgres_url=postgres_url,
        redis_url=redis_url,
        runners=2,
        service_env={
            "billing": BILLING_ENV,
            "gateway": {
                "GATEWAY_DRAIN_TIMEOUT_S": str(DRAIN_S),
                "GATEWAY_ACCEPT_GRACE_S": str(ACCEPT_GRACE_S),
                # A loaded machine must not turn a slow start into an error: restarts are under test.
                "GATEWAY_QUEUE_TIMEOUT_S": "10",
                "GATEWAY_IDLE_TIMEOUT_S": "10",
            },
            "runner": {"RUNNER_DRAIN_S": str(DRAIN_S)},
        },
    ) as stack:
        second = stack.add_gateway()
        with AdminClient(stack.gateway_url, stack.admin_token) as admin:
            user = admin.create_user("rolling-restart")
            admin.add_credits(user["id"], RICH_CREDITS)
            # 50 streams of 4 s are 750 requests a minute: above the default limit of a key.
            key = admin.create_api_key(user["id"], "rolling", rate_limit_per_minute=100_000)["key"]
            model = "e2e-rolling"
            set_price(admin, "openai", model)
            agent = admin.create_agent(name="rolling", provider="openai", model=model, owner_id=user["id"])
        second_name = next(n for n in stack.processes if n.startswith("gateway-"))
        yield Handle(stack, {"gateway": stack.gateway_url, second_name: second}, key, agent["id"], model)


@dataclass
class Probe:
    at: float
    url: str
    status: str  # "ready", "draining" (a 503 saying so), or what else it got


class Balancer:
    """Routes new streams round-robin to the gateways whose last readiness probe answered 200."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.ready = dict.fromkeys(urls, False)
        self.changes: list[Probe] = []  # every change of a gateway's answer
        self._last: dict[str, str] = {}
        self._turn = itertools.cycle(urls)

    async def probe(self, http: httpx.AsyncClient, url: str) -> None:
        try:
            r = await http.get(f"{url}/readyz")
            status = "ready" if r.status_code == 200 else f"{r.status_code} {r.json().get('phase')}"
            status = "draining" if status == "503 draining" else status
        except httpx.TransportError as exc:
            status = type(exc).__name__
        if status != self._last.get(url):
            self._last[url] = status
            self.changes.append(Probe(time.monotonic(), url, status))
        self.ready[url] = status == "ready"

    async def watch(self, stop: asyncio.Event) -> None:
        # A new connection for every probe, as a balancer's health check makes.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(limits=limits, timeout=1.0) as http:
            while not stop.is_set():
                await asyncio.gather(*(self.probe(http, url) for url in self.urls))
                await asyncio.sleep(PROBE_EVERY_S)

    async def pick(self) -> str:
        while True:
            for _ in self.urls:
                url = next(self._turn)
                if self.ready[url]:
                    return url
            await asyncio.sleep(0.02)

    def first_not_ready(self, url: str, since: float) -> Probe:
        """The first answer other than ready since ``since`` (a probe timing out on a loaded machine
        says nothing of the gateway: skipped)."""
        return next(
            p
            for p in self.changes
            if p.url == url and p.at >= since and p.status != "ready" and not p.status.endswith("Timeout")
        )


@dataclass
class Outcome:
    url: str
    began: float
    ended: float
    text: str = ""
    finish: str | None = None
    error: str | None = None


@dataclass
class Load:
    """Keeps ``STREAMS`` streams going through the balancer until told to stop."""

    handle: Handle
    balancer: Balancer
    outcomes: list[Outcome] = field(default_factory=list)
    open: dict[str, int] = field(default_factory=dict)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def worker(self, clients: dict[str, openai.AsyncOpenAI]) -> None:
        while not self.stop.is_set():
            url = await self.balancer.pick()
            out = Outcome(url, time.monotonic(), 0.0)
            self.open[url] = self.open.get(url, 0) + 1
            try:
                stream = await clients[url].chat.completions.create(
                    model=self.handle.agent_id, messages=[{"role": "user", "content": "Go."}], stream=True
                )
                async for chunk in stream:
                    for choice in chunk.choices:
                        out.text += choice.delta.content or ""
                        out.finish = choice.finish_reason or out.finish
            except Exception as exc:  # every failure is a finding, reported with the others
                out.error = f"{type(exc).__name__}: {exc} ({exc.__cause__!r})"  # the cause: refused, reset …
            finally:
                self.open[url] -= 1
                out.ended = time.monotonic()
                self.outcomes.append(out)

    def done(self) -> int:
        return len(self.outcomes)


@dataclass
class Restart:
    name: str
    signalled: float
    exited: float
    code: int | None
    busy: int  # streams (gateway) or runs (runner) under way when it was told to stop
    pid: int


async def _until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def _active_runs(http: httpx.AsyncClient, stack: Stack, name: str) -> int:
    metrics = (await http.get(stack.health_url(name).replace("/readyz", "/metrics"))).text
    found = re.search(r"^runner_active_runs (\S+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


async def _until_busy(http: httpx.AsyncClient, stack: Stack, runner: str, runs: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await _active_runs(http, stack, runner) < runs:
        assert time.monotonic() < deadline, f"{runner} runs fewer than {runs} runs"
        await asyncio.sleep(0.1)


async def _restart(process: ManagedProcess, grace_s: float, busy: int) -> Restart:
    """SIGTERM, wait for the exit (at most the grace period), start again, wait until ready."""
    assert process.proc is not None
    pid = process.proc.pid
    signalled = time.monotonic()
    process.signal_group(signal.SIGTERM)
    while process.proc.poll() is None and time.monotonic() - signalled < grace_s + 5:
        await asyncio.sleep(0.05)
    exited = time.monotonic()
    code = process.proc.poll()
    if code is None:
        process.kill()
    await asyncio.to_thread(process.start)
    await asyncio.to_thread(process.wait_ready, 60.0)
    return Restart(process.name, signalled, exited, code, busy, pid)


async def test_rolling_restart_of_gateways_and_runners_cuts_no_stream(rolling: Handle) -> None:
    stack = rolling.stack
    await FakeLLM(stack.fakellm_url or "").script(rolling.model, [{"text": TEXT, "tokens_per_s": TOKENS_PER_S}])
    urls = list(rolling.gateways.values())
    balancer = Balancer(urls)
    load = Load(rolling, balancer)
    stop_probes = asyncio.Event()
    watching = asyncio.create_task(balancer.watch(stop_probes))

    # Which runner started each run, and when (its runner id names its pid).
    started: list[tuple[float, str]] = []
    nc = await nats.connect(stack.nats_url)

    async def on_event(msg) -> None:  # type: ignore[no-untyped-def]
        if b'"type":"started"' in msg.data:
            runner = re.search(rb'"runner_id":"([^"]*)"', msg.data)
            started.append((time.monotonic(), runner.group(1).decode() if runner else ""))

    await nc.subscribe(Subjects(stack.config.namespace).run_events_all, cb=on_event)
    # A new connection for every stream. A kept-alive one may be closed by the gateway (idle for 5 s) just
    # as a request goes out on it: HTTP/1.1's own race, which clients retry, unrelated to draining, and
    # frequent on a loaded machine, where the client reads a response's end seconds after it was sent.
    limits = httpx2.Limits(max_connections=1000, max_keepalive_connections=0)
    clients = {
        url: openai.AsyncOpenAI(
            base_url=f"{url}/v1",
            api_key=rolling.api_key,
            max_retries=0,  # a retried request would hide a refused one
            http_client=openai.DefaultAsyncHttpxClient(limits=limits),
        )
        for url in urls
    }
    restarts: list[Restart] = []
    workers: list[asyncio.Task[None]] = []
    try:
        await _until(lambda: all(balancer.ready.values()), 10, "the gateways are not both ready")
        workers = [asyncio.create_task(load.worker(clients)) for _ in range(STREAMS)]
        await _until(lambda: load.done() >= STREAMS // 2, 30, "the streams do not complete before any restart")

        async with httpx.AsyncClient(timeout=5) as http:
            for name, url in rolling.gateways.items():
                # Both carry streams (the one restarted before, again) when the next one is told to stop.
                await _until(lambda: min(load.open.get(u, 0) for u in urls) >= 10, 15, "a gateway carries no streams")
                restarts.append(await _restart(stack.processes[name], GATEWAY_GRACE_S, load.open[url]))
            for name in stack.runner_names:
                await _until_busy(http, stack, name, 5)  # something to drain
                busy = await _active_runs(http, stack, name)
                restarts.append(await _restart(stack.processes[name], RUNNER_GRACE_S, busy))
                await _until_busy(http, stack, name, 1)  # the restarted runner takes runs again
        load.stop.set()
        await asyncio.wait_for(asyncio.gather(*workers), 30)
    finally:
        load.stop.set()
        stop_probes.set()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, watching, return_exceptions=True)
        for client in clients.values():
            await client.close()
        await nc.drain()

    story = _timeline(load, balancer, restarts)
    failed = [o for o in load.outcomes if o.error or o.finish != "stop" or o.text != TEXT]
    assert not failed, f"{len(failed)} of {len(load.outcomes)} streams cut or failed, e.g. {failed[:3]}\n{story}"
    assert len(load.outcomes) >= 2 * STREAMS

    for r in restarts:
        grace = GATEWAY_GRACE_S if r.name.startswith("gateway") else RUNNER_GRACE_S
        assert r.code == 0, f"{r.name} exited with {r.code}:\n{stack.tail(r.name)}"
        assert r.exited - r.signalled <= grace, f"{r.name} took {r.exited - r.signalled:.1f} s to stop"
        assert r.busy >= 5, f"{r.name} had {r.busy} streams or runs under way when told to stop: nothing to drain"

    for r, url in zip(restarts, urls, strict=False):  # the gateways
        # Not ready at once, while it still served (a 503 draining, not a refused connection) …
        noticed = balancer.first_not_ready(url, r.signalled)
        assert noticed.status == "draining", f"{r.name} first answered {noticed.status} after SIGTERM\n{story}"
        # … served the grace out, then let its open streams finish (each took about 4 s).
        assert r.exited - r.signalled >= ACCEPT_GRACE_S
        # Streams begun while it drained went to the other gateway, and completed there.
        back = next(p.at for p in balancer.changes if p.url == url and p.at > r.exited and p.status == "ready")
        during = [o for o in load.outcomes if noticed.at < o.began < back]
        assert during and all(o.url != url for o in during), story

    for r in restarts[2:]:  # the runners
        tag = f"-{r.pid}-"
        late = [t - r.signalled for t, runner in started if tag in runner and t > r.signalled + LATE_START_S]
        assert not late, f"{r.name} started runs {late} s after SIGTERM"
        others = [t for t, runner in started if tag not in runner and r.signalled < t < r.exited]
        assert others, f"no run started elsewhere while {r.name} drained"


def _timeline(load: Load, balancer: Balancer, restarts: list[Restart]) -> str:
    """What happened when (seconds from the first stream), for a failure's message."""
    t0 = load.outcomes[0].began if load.outcomes else 0.0
    lines = [f"{r.name}: SIGTERM at {r.signalled - t0:.2f}, exit {r.code} at {r.exited - t0:.2f}" for r in restarts]
    lines += [f"{p.at - t0:.2f} {p.url} {p.status}" for p in balancer.changes]
    lines += [f"{o.began - t0:.2f}-{o.ended - t0:.2f} {o.url} {o.error}" for o in load.outcomes if o.error]
    return "\n".join(lines)
