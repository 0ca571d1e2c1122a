"""A gateway in-process (uvicorn on a free port) with fake catalog and billing responders and a scripted
fake runner that pulls RUNS and publishes events, all on the test's own NATS namespace."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import nats
import nats.errors
import pytest
import uvicorn
from openai import AsyncOpenAI

from contracts import (
    AdmitReply,
    AdmitRequest,
    AgentAccessReply,
    AgentAccessRequest,
    AgentSnapshot,
    CancelRun,
    ErrorInfo,
    ListModelsReply,
    ListModelsRequest,
    ModelInfo,
    PrefetchReply,
    PrefetchRequest,
    Principal,
    RunAdmitted,
    RunRequest,
    RunStarted,
    Subjects,
    VerifyKeyReply,
    VerifyKeyRequest,
)
from gateway.app import create_app
from gateway.auth import hash_key
from gateway.httpguard import guarded_protocol
from gateway.settings import GatewaySettings
from servicekit.natsio import ensure_streams

KEY = "sk-test-alice-0123456789"
NO_USE_KEY = "sk-test-bob-no-remote-agents"
BROKE_KEY = "sk-test-carol-broke"

Script = Callable[["RunContext"], Awaitable[None]]


class RunContext:
    """What a script sees: the request, and ``emit`` that numbers events in order."""

    def __init__(self, nc: nats.NATS, subjects: Subjects, request: RunRequest) -> None:
        self.nc = nc
        self.subjects = subjects
        self.request = request
        self.seq = 0

    async def emit(self, cls: type, **fields: Any) -> None:
        event = cls(run_id=self.request.run_id, seq=self.seq, **fields)
        self.seq += 1
        await self.nc.publish(self.subjects.run_events(self.request.run_id), event.model_dump_json().encode())

    async def raw(self, data: bytes) -> None:
        await self.nc.publish(self.subjects.run_events(self.request.run_id), data)

    async def start(self) -> None:
        await self.emit(RunStarted, runner_id="fake")


@dataclass
class Fakes:
    """Scripts per agent id, what the fakes saw, and switches the tests flip."""

    scripts: dict[str, Script] = field(default_factory=dict)
    agents: dict[str, AgentSnapshot] = field(default_factory=dict)
    forbidden_agents: set[str] = field(default_factory=set)
    run_requests: list[RunRequest] = field(default_factory=list)
    admit_requests: list[AdmitRequest] = field(default_factory=list)
    verify_calls: int = 0
    cancels: list[CancelRun] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    run_received: asyncio.Event = field(default_factory=asyncio.Event)
    run_headers: list[dict[str, str]] = field(default_factory=list)
    #: Each run's go-ahead (RunAdmitted), or None once it was cancelled before one came.
    admissions: dict[str, asyncio.Future[RunAdmitted | None]] = field(default_factory=dict)
    revoked: set[str] = field(default_factory=set)
    #: Whether the fake billing admits runs ahead of time when a gateway asks (off: it grants none).
    grant_ahead: bool = False
    prefetch_requests: list[PrefetchRequest] = field(default_factory=list)
    #: How long the fake billing takes to answer an ask for runs ahead (past the gateway's wait: late).
    prefetch_delay_s: float = 0.0
    #: Set once the fake billing has answered an ask for runs ahead.
    prefetch_answered: asyncio.Event = field(default_factory=asyncio.Event)

    def agent(self, agent_id: str, script: Script, **params: Any) -> AgentSnapshot:
        snapshot = AgentSnapshot(
            id=agent_id, name=f"Agent {agent_id}", provider="openai", model="fake-model", model_parameters=params
        )
        self.agents[agent_id] = snapshot
        self.scripts[agent_id] = script
        return snapshot


def _principals() -> dict[str, Principal]:
    return {
        hash_key(KEY): Principal(user_id="u_alice", key_id="k_alice"),
        hash_key(NO_USE_KEY): Principal(user_id="u_bob", key_id="k_bob", remote_agents_use=False),
        hash_key(BROKE_KEY): Principal(user_id="u_carol", key_id="k_carol"),
    }


async def run_fakes(nc: nats.NATS, subjects: Subjects, fakes: Fakes, *, billing: bool = True) -> list[Any]:
    """Subscribe the catalog and billing responders (``billing``: admission and runs ahead; else a real
    billing answers) and the cancel listener; return the subscriptions."""
    principals = _principals()

    async def verify(msg: Any) -> None:
        fakes.verify_calls += 1
        req = VerifyKeyRequest.model_validate_json(msg.data)
        principal = None if req.key_hash in fakes.revoked else principals.get(req.key_hash)
        if principal is None:
            err = ErrorInfo(
                status=401, type="authentication_error", message="Incorrect API key provided.", code="invalid_api_key"
            )
            reply = VerifyKeyReply(error=err)
        else:
            reply = VerifyKeyReply(principal=principal, cache_ttl_s=60)
        await msg.respond(reply.model_dump_json().encode())

    async def access(msg: Any) -> None:
        req = AgentAccessRequest.model_validate_json(msg.data)
        if req.agent_id not in fakes.agents or req.agent_id in fakes.forbidden_agents:
            # As the catalog: an agent the caller may not use answers exactly as a missing one.
            err = ErrorInfo(
                status=404,
                type="invalid_request_error",
                message="No such model.",
                param="model",
                code="model_not_found",
            )
            reply = AgentAccessReply(error=err)
        else:
            reply = AgentAccessReply(agent=fakes.agents[req.agent_id], cache_ttl_s=60)
        await msg.respond(reply.model_dump_json().encode())

    async def models(msg: Any) -> None:
        ListModelsRequest.model_validate_json(msg.data)
        infos = [
            ModelInfo(id=a.id, created=1700000000, owned_by="u_owner", name=a.name, provider=a.provider)
            for a in fakes.agents.values()
        ]
        await msg.respond(ListModelsReply(models=infos).model_dump_json().encode())

    async def admit(msg: Any) -> None:
        req = AdmitRequest.model_validate_json(msg.data)
        fakes.admit_requests.append(req)
        if req.user_id == "u_carol":
            err = ErrorInfo(
                status=402, type="insufficient_quota", message="Balance too low.", code="insufficient_quota"
            )
            reply = AdmitReply(admitted=False, error=err)
        else:
            reply = AdmitReply(admitted=True, reservation_id=f"res_{req.run_id}")
            if req.announce:
                go = RunAdmitted(run_id=req.run_id, reservation_id=reply.reservation_id)
                await nc.publish(subjects.run_admitted(req.run_id), go.model_dump_json().encode())
        await msg.respond(reply.model_dump_json().encode())

    async def prefetch(msg: Any) -> None:
        req = PrefetchRequest.model_validate_json(msg.data)
        fakes.prefetch_requests.append(req)
        grant = fakes.grant_ahead and req.user_id != "u_carol"
        granted = {run_id: f"pre_{run_id}" for run_id in req.run_ids} if grant else {}
        if fakes.prefetch_delay_s:
            await asyncio.sleep(fakes.prefetch_delay_s)
        await msg.respond(PrefetchReply(reservations=granted).model_dump_json().encode())
        fakes.prefetch_answered.set()

    async def cancel(msg: Any) -> None:
        cancel = CancelRun.model_validate_json(msg.data)
        fakes.cancels.append(cancel)
        fakes.cancelled.set()
        waiting = admission_of(fakes, cancel.run_id)
        if not waiting.done():
            waiting.set_result(None)

    async def admitted(msg: Any) -> None:
        go = RunAdmitted.model_validate_json(msg.data)
        waiting = admission_of(fakes, go.run_id)
        if not waiting.done():
            waiting.set_result(go)

    subs = [
        await nc.subscribe(subjects.catalog_verify_key, queue="catalog", cb=verify),
        await nc.subscribe(subjects.catalog_agent_access, queue="catalog", cb=access),
        await nc.subscribe(subjects.catalog_models_list, queue="catalog", cb=models),
        await nc.subscribe(subjects.run_cancel_all, cb=cancel),
        await nc.subscribe(subjects.run_admitted_all, cb=admitted),
    ]
    if billing:
        subs.append(await nc.subscribe(subjects.billing_admit, queue="billing", cb=admit))
        subs.append(await nc.subscribe(subjects.billing_prefetch, queue="billing", cb=prefetch))
    return subs


def admission_of(fakes: Fakes, run_id: str) -> asyncio.Future[RunAdmitted | None]:
    if run_id not in fakes.admissions:
        fakes.admissions[run_id] = asyncio.get_running_loop().create_future()
    return fakes.admissions[run_id]


async def play(script: Script, ctx: RunContext, fakes: Fakes) -> None:
    """As a runner does: a run queued before its admission starts only on its go-ahead."""
    if ctx.request.await_admission:
        go = await asyncio.wait_for(admission_of(fakes, ctx.request.run_id), 10)
        if go is None:
            return
    await script(ctx)


async def fake_runner(nc: nats.NATS, subjects: Subjects, fakes: Fakes) -> None:
    """Pull run requests like a runner does and play the agent's script."""
    js = nc.jetstream()
    psub = await js.pull_subscribe(subjects.run_request, durable=subjects.runs_consumer, stream=subjects.runs_stream)
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            try:
                msgs = await psub.fetch(1, timeout=5)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                request = RunRequest.model_validate_json(msg.data)
                fakes.run_requests.append(request)
                fakes.run_headers.append(dict(msg.headers or {}))
                fakes.run_received.set()
                script = fakes.scripts[request.agent.id]
                task = asyncio.create_task(play(script, RunContext(nc, subjects, request), fakes))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for task in tasks:
            task.cancel()
        await psub.unsubscribe()


@dataclass
class Stack:
    url: str
    fakes: Fakes
    nc: nats.NATS
    subjects: Subjects
    app: Any

    def client(self, key: str = KEY, **kwargs: Any) -> AsyncOpenAI:
        return AsyncOpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, **kwargs)

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10)


@contextlib.asynccontextmanager
async def serve(settings: GatewaySettings) -> AsyncIterator[tuple[str, Any]]:
    """Uvicorn on a socket bound before it starts: a request made early just waits in the backlog."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    app = create_app(settings)
    protocol = guarded_protocol(settings.max_header_bytes, settings.header_timeout_s)  # as gateway.__main__ does
    config = uvicorn.Config(app, lifespan="on", log_level="warning", ws="none", http=protocol, loop="none")
    server = uvicorn.Server(config)
    # uvicorn's own signal handling would take over the test process' SIGINT.
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
def fake_billing() -> bool:
    """Whether the stack's billing is the fake responders (a module overrides this to run a real one)."""
    return True


@pytest.fixture
async def stack(
    nats_url: str, namespace: str, nats_client: nats.NATS, settings_overrides: dict[str, Any], fake_billing: bool
) -> AsyncIterator[Stack]:
    subjects = Subjects(namespace)
    await ensure_streams(nats_client.jetstream(), subjects)
    fakes = Fakes()
    subs = await run_fakes(nats_client, subjects, fakes, billing=fake_billing)
    runner = asyncio.create_task(fake_runner(nats_client, subjects, fakes))
    values: dict[str, Any] = {
        "nats_url": nats_url,
        "nats_namespace": namespace,
        "queue_timeout_s": 1.5,
        "idle_timeout_s": 0.75,
        "rpc_timeout_s": 1.0,
        **settings_overrides,
    }
    settings = GatewaySettings(**values)
    try:
        async with serve(settings) as (url, app):
            async with httpx.AsyncClient(base_url=url, timeout=10) as http:
                assert (await http.get("/healthz")).status_code == 200
            yield Stack(url=url, fakes=fakes, nc=nats_client, subjects=subjects, app=app)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
        for sub in subs:
            await sub.unsubscribe()


@pytest.fixture
async def second(stack: Stack) -> AsyncIterator[str]:
    """A second gateway on the same namespace (another replica), with the first one's resume window."""
    settings = GatewaySettings(
        nats_url=stack.app.state.settings.nats_url,
        nats_namespace=stack.subjects.namespace,
        queue_timeout_s=1.5,
        idle_timeout_s=10.0,
        rpc_timeout_s=1.0,
        resume_window_s=stack.app.state.settings.resume_window_s,
    )
    async with serve(settings) as (url, _):
        yield url
