"""One shape of health for every service: ``/healthz``, ``/readyz`` and ``/metrics``.

**Liveness** — ``GET /healthz`` is ``200 {"status": "ok"}`` whenever the process's event loop answers.
Nothing else is checked: a dependency that is down is a readiness matter, and restarting the process
would not bring it back.

**Readiness** — ``GET /readyz`` is 200 (ready or degraded) or 503 (not ready), with one body in every
service (the gateway's FastAPI route renders the same :class:`Readiness`)::

    {"status": "ready" | "degraded" | "not ready",
     "checks": {"nats": true, "database": true},   # what the service cannot work without
     "optional": {"redis": false},                   # what it works without (never decides readiness)
     "phase": "starting" | "serving" | "draining",
     ...}                                            # service facts, e.g. billing's "dead_letters"

- ``checks`` hold only what the service cannot work without: NATS everywhere, the database for
  billing and the catalog. Redis is never one: every service runs without it (the catalog uncached,
  the gateway's limits in memory), so it is ``optional``, and a failed optional check makes the
  status ``degraded`` (still 200).
- Every check, optional check and fact runs at once, each bounded by :data:`CHECK_TIMEOUT_S` (1 s,
  well under the chart's 3 s probe timeout): a hung dependency is ``false``, never a hung probe.
- ``phase`` is the service's lifecycle: it is not ready before it serves or once it drains, whatever
  the checks say (they are still reported).
- A service may add facts (named awaitables; ``null`` when one fails or times out) and say from them
  that it is ``degraded`` — billing parks usage it cannot apply; see services/billing/README.md.

**Metrics** — ``GET /metrics`` is the service's own Prometheus registry, rendered by the service
(each has a ``metrics.Metrics`` with its own ``CollectorRegistry`` and ``render()``): servicekit
stays free of prometheus_client and of any process-wide registry. A service whose gauges are read
from elsewhere when scraped (a JetStream consumer's backlog, :mod:`servicekit.consumerlag`) gives
``sample``, awaited before each render.

:class:`HealthServer` serves this on the health port of every service that has no HTTP API of its own
(runner, billing, catalog); the gateway answers the same paths on its API port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn
from nats.aio.client import Client

from .runtime import QuietServer

log = logging.getLogger(__name__)

#: The bound of each check, optional check and fact. The chart's readiness probe times out after 3 s.
CHECK_TIMEOUT_S = 1.0
#: Prometheus's text exposition format (what ``prometheus_client.generate_latest`` renders).
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Phase = Literal["starting", "serving", "draining"]
#: A readiness check: passes when it returns ``True`` in time; ``False``, an exception or the
#: timeout fail it.
Check = Callable[[], Awaitable[bool]]
#: A fact for the readiness body: its value, or ``None`` when it raises or times out.
Fact = Callable[[], Awaitable[Any]]
_RESERVED = frozenset({"status", "checks", "optional", "phase"})


@dataclass(frozen=True)
class Readiness:
    """One answer of ``/readyz``."""

    checks: Mapping[str, bool]
    optional: Mapping[str, bool] = field(default_factory=dict)
    phase: Phase = "serving"
    facts: Mapping[str, Any] = field(default_factory=dict)
    degraded: bool = False

    @property
    def ready(self) -> bool:
        return self.phase == "serving" and all(self.checks.values())

    @property
    def status(self) -> Literal["ready", "degraded", "not ready"]:
        if not self.ready:
            return "not ready"
        return "degraded" if self.degraded or not all(self.optional.values()) else "ready"

    @property
    def http_status(self) -> int:
        """200 while ready (degraded included: the service still works), 503 otherwise."""
        return 200 if self.ready else 503

    def body(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "checks": dict(self.checks),
            "optional": dict(self.optional),
            "phase": self.phase,
            **self.facts,
        }


#: Checks and facts given up on and still winding down, by their callable: the next probe does not
#: start another meanwhile (it fails at once), so a dependency that hangs does not pile them up.
_WINDING_DOWN: dict[Callable[[], Awaitable[Any]], asyncio.Task[Any]] = {}


async def _bounded(call: Callable[[], Awaitable[Any]], timeout_s: float, name: str) -> tuple[bool, Any]:
    """(answered, value): ``call()`` within ``timeout_s``; an exception or the timeout is (False, None).

    The answer never waits past ``timeout_s``, even for a check whose cancellation itself waits (a
    database call under SQLAlchemy finishes its rollback and close shielded from cancellation: seconds,
    against a hung server): the check is cancelled and left to wind down on its own."""
    if call in _WINDING_DOWN:
        return False, None
    try:
        task = asyncio.ensure_future(call())
    except Exception:
        log.debug("readiness: %s failed", name, exc_info=True)
        return False, None
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        _WINDING_DOWN[call] = task

        def wound_down(t: asyncio.Task[Any]) -> None:
            _WINDING_DOWN.pop(call, None)
            if not t.cancelled():
                t.exception()  # retrieved: no "never retrieved" warning for a check given up on

        task.add_done_callback(wound_down)
        log.debug("readiness: %s did not answer within %g s", name, timeout_s)
        return False, None
    if task.exception() is not None:  # a probe reports a failure, it does not raise one
        log.debug("readiness: %s failed", name, exc_info=task.exception())
        return False, None
    return True, task.result()


async def run_checks(checks: Mapping[str, Check], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, bool]:
    """Run every check at once, each bounded by ``timeout_s``: name → passed."""
    results = await asyncio.gather(*(_bounded(check, timeout_s, name) for name, check in checks.items()))
    return {name: answered and value is True for name, (answered, value) in zip(checks, results, strict=True)}


async def gather_facts(facts: Mapping[str, Fact], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, Any]:
    """Every fact at once, each bounded by ``timeout_s``: name → value (``None`` when it failed)."""
    results = await asyncio.gather(*(_bounded(fact, timeout_s, name) for name, fact in facts.items()))
    return {name: value for name, (_, value) in zip(facts, results, strict=True)}


async def nats_answers(nc: Client | None, timeout_s: float = CHECK_TIMEOUT_S) -> bool:
    """NATS answers a round trip: a PING, which only the server answers (PONG).

    Not a request to an inbox nobody listens on, answered by the server's "no responders": any
    client subscribed to ``>`` or ``_INBOX.>`` (an operator's ``nats sub '>'``) takes that request
    silently, and every service then reported NATS down while it was up. Not ``nc.flush()`` either:
    when a flush gives up on its PONG (a server stalled for longer than the timeout), nats-py (2.16)
    cancels the future it left queued, and the late PONG then kills the client's read loop — the
    connection still says it is connected and never receives again. Here the wait gives up without
    cancelling: a late PONG completes the future harmlessly, and a reconnection forgets it.
    """
    if nc is None or not nc.is_connected:
        return False
    pong = asyncio.get_running_loop().create_future()
    try:
        await nc._send_ping(pong)  # private: nats-py's own PING with a future of ours (nats-py pinned)
    except Exception:  # the connection broke as the PING was written
        return False
    done, _ = await asyncio.wait({pong}, timeout=timeout_s)
    return bool(done)


class Health:
    """A service's health: its readiness checks, its phase and its metrics.

    ``checks`` decide readiness; ``optional`` checks only make it degraded; ``facts`` go into the body
    and ``degraded(facts)`` may say the service needs an operator. The service sets :attr:`phase`:
    ``"serving"`` once it answers, ``"draining"`` as it begins to stop. ``alive`` (liveness, ``/healthz``)
    is false only for a state the process cannot leave by itself — a loop that died — so that the
    orchestrator restarts it; a dependency that is down is a readiness matter, never a liveness one.
    """

    def __init__(
        self,
        checks: Mapping[str, Check],
        *,
        metrics: Callable[[], bytes],
        optional: Mapping[str, Check] | None = None,
        facts: Mapping[str, Fact] | None = None,
        degraded: Callable[[Mapping[str, Any]], bool] | None = None,
        alive: Callable[[], bool] | None = None,
        timeout_s: float = CHECK_TIMEOUT_S,
        sample: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        clash = _RESERVED & set(facts or {})
        if clash:
            raise ValueError(f"a readiness fact may not be named {sorted(clash)}")
        self.checks = dict(checks)
        self.optional = dict(optional or {})
        self.facts = dict(facts or {})
        self.metrics = metrics
        self.sample = sample
        self.phase: Phase = "starting"
        self._degraded = degraded
        self.alive = alive or (lambda: True)
        self._timeout_s = timeout_s

    async def readiness(self) -> Readiness:
        phase = self.phase
        checks, optional, facts = await asyncio.gather(
            run_checks(self.checks, self._timeout_s),
            run_checks(self.optional, self._timeout_s),
            gather_facts(self.facts, self._timeout_s),
        )
        degraded = self._degraded(facts) if self._degraded is not None else False
        return Readiness(checks, optional, phase, facts, degraded)


Answer = tuple[int, str, bytes]
_JSON = "application/json"


class HealthApp:
    """The ASGI app of the health port: ``GET``/``HEAD`` of ``/healthz``, ``/readyz`` and ``/metrics``."""

    def __init__(self, health: Health) -> None:
        self.health = health

    async def answer(self, method: str, path: str) -> Answer:
        if method not in ("GET", "HEAD"):
            return 405, _JSON, b'{"error":"method not allowed"}'
        if path == "/healthz":
            if not self.health.alive():
                return 503, _JSON, b'{"status":"dead"}'
            return 200, _JSON, b'{"status":"ok"}'
        if path == "/readyz":
            readiness = await self.health.readiness()
            return readiness.http_status, _JSON, json.dumps(readiness.body()).encode()
        if path == "/metrics":
            if self.health.sample is not None:
                await self.health.sample()
            return 200, METRICS_CONTENT_TYPE, self.health.metrics()
        return 404, _JSON, b'{"error":"not found"}'

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan is off; nothing else is ours
            return
        status, ctype, body = await self.answer(scope["method"], scope["path"])
        headers = [
            (b"content-type", ctype.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})


class HealthServer:
    """Serves :class:`HealthApp` on ``host:port`` (port 0: any free one, see :attr:`port`).

    Start it first and stop it last: ``/healthz`` then answers through start-up (migrations) and the
    drain, and ``/readyz`` says which phase the service is in. The socket is bound in :meth:`start`,
    so the port is known and connections wait in the backlog until uvicorn accepts them. Signals are
    left to the process (:func:`servicekit.runtime.run_service`).
    """

    def __init__(self, health: Health, host: str, port: int) -> None:
        self.health = health
        self._host = host
        self._port = port
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def port(self) -> int:
        assert self._socket is not None, "the health server is not started"
        return int(self._socket.getsockname()[1])

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._socket = sock
        # h11: uvicorn's own dependency, so no service has to carry httptools for three GET routes.
        config = uvicorn.Config(
            HealthApp(self.health), lifespan="off", log_config=None, access_log=False, log_level="warning", http="h11"
        )
        self._server = QuietServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name="health-server")

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
            self._server = self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def __aenter__(self) -> HealthServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@contextlib.asynccontextmanager
async def serving_health(health: Health, host: str, port: int) -> AsyncIterator[HealthServer | None]:
    """``async with serving_health(health, host, port):`` — a :class:`HealthServer` for the block,
    or nothing when ``port`` is 0 (every service's setting for "no health port")."""
    if not port:
        yield None
        return
    async with HealthServer(health, host, port) as server:
        yield server
