"""The runner in-process against real NATS (a namespace of its own) and the fake LLM in-process.

``harness.run(request)`` publishes a RunRequest to RUNS the way the gateway does and collects the
run's events up to the terminal one, plus every USAGE message (UsageRecorded, RunClosed).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from contracts import (
    OFFER_TAKEN,
    RUN_EVENT,
    AgentSnapshot,
    Caller,
    ChatMessage,
    RunClosed,
    RunRequest,
    Subjects,
    UsageRecorded,
)
from contracts.events import TERMINAL_EVENT_TYPES
from fakellm.server import FakeLLM
from runner.app import RunnerApp
from runner.settings import RunnerSettings
from servicekit.natsio import flush_in_order

WAIT_S = 10.0


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    server = FakeLLM()
    await server.start()
    yield server
    await server.stop()


@dataclass
class Collected:
    events: list[Any] = field(default_factory=list)
    usage: list[UsageRecorded] = field(default_factory=list)
    closed: list[RunClosed] = field(default_factory=list)

    def of(self, type_: str) -> list[Any]:
        return [e for e in self.events if e.type == type_]

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]

    @property
    def text(self) -> str:
        return "".join(e.delta for e in self.of("text_delta"))


@dataclass
class Harness:
    nc: Any
    subjects: Subjects
    fake: FakeLLM
    app: RunnerApp

    async def script(self, model: str, turns: list[dict[str, Any]]) -> None:
        async with httpx.AsyncClient() as http:
            r = await http.put(f"{self.fake.url}/_fake/scripts/{model}", json={"turns": turns})
            r.raise_for_status()

    async def requests(self, model: str) -> list[dict[str, Any]]:
        async with httpx.AsyncClient() as http:
            r = await http.get(f"{self.fake.url}/_fake/requests", params={"model": model})
            r.raise_for_status()
            return r.json()["data"]

    async def wait_status(self, model: str, status: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as http:
            r = await http.get(f"{self.fake.url}/_fake/wait", params={"model": model, "status": status, "timeout": 5})
            assert r.status_code == 200, r.text
            return r.json()

    async def start(
        self, request: RunRequest, on_event: Callable[[Any], None] | None = None, *, offer: bool = False
    ) -> tuple[Collected, asyncio.Event, Any]:
        """Subscribe to the run's events and USAGE, publish the request (``offer``: offer it straight to a
        runner, which must take it); returns (collected, done, subs)."""
        got = Collected()
        done = asyncio.Event()
        closed = asyncio.Event()

        async def on_run_event(msg: Any) -> None:
            event = RUN_EVENT.validate_json(msg.data)
            got.events.append(event)
            if on_event is not None:
                on_event(event)
            if event.type in TERMINAL_EVENT_TYPES:
                done.set()

        async def on_usage(msg: Any) -> None:
            if msg.subject == self.subjects.usage_recorded:
                got.usage.append(UsageRecorded.model_validate_json(msg.data))
            else:
                got.closed.append(RunClosed.model_validate_json(msg.data))
                closed.set()

        subs = [
            await self.nc.subscribe(self.subjects.run_events(request.run_id), cb=on_run_event),
            await self.nc.subscribe(self.subjects.usage_all, cb=on_usage),
        ]
        await flush_in_order(self.nc)
        if offer:
            assert await self.offer(request) == OFFER_TAKEN
            return got, done, (subs, closed)
        js = self.nc.jetstream()
        await js.publish(
            self.subjects.run_request, request.model_dump_json().encode(), headers={"Nats-Msg-Id": request.run_id}
        )
        return got, done, (subs, closed)

    async def offer(self, request: RunRequest) -> bytes:
        """Offer the run as a gateway does: the answer (raises ``NoRespondersError`` when no runner listens)."""
        reply = await self.nc.request(self.subjects.run_offer, request.model_dump_json().encode(), timeout=WAIT_S)
        return bytes(reply.data)

    async def run(self, request: RunRequest, *, offer: bool = False) -> Collected:
        got, done, (subs, closed) = await self.start(request, offer=offer)
        await asyncio.wait_for(done.wait(), WAIT_S)
        await asyncio.wait_for(closed.wait(), WAIT_S)
        for s in subs:
            await s.unsubscribe()
        return got


def make_request(
    model: str = "m1",
    text: str = "hello there",
    *,
    provider: str = "openai",
    tools: list[str] | None = None,
    instructions: str | None = "Be brief.",
    model_parameters: dict[str, Any] | None = None,
    reservation_id: str | None = None,
    deadline_s: float = 60.0,
    **kw: Any,
) -> RunRequest:
    return RunRequest(
        run_id=f"run_{secrets.token_hex(8)}",
        caller=Caller(user_id="u1", key_id="k1"),
        agent=AgentSnapshot(
            id="agent_1",
            name="Helper",
            provider=provider,
            model=model,
            instructions=instructions,
            tools=tools or [],
            model_parameters=model_parameters or {},
        ),
        messages=[ChatMessage(role="user", content=text)],
        deadline=datetime.now(UTC) + timedelta(seconds=deadline_s),
        reservation_id=reservation_id,
        conversation_id="conv_1",
        **kw,
    )


@pytest.fixture
def runner_env(fake_llm: FakeLLM) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{fake_llm.url}/v1",
        "OPENAI_API_KEY": "sk-test-not-a-secret",
        "ANTHROPIC_BASE_URL": fake_llm.url,
        "ANTHROPIC_API_KEY": "sk-ant-test-not-a-secret",
    }


@pytest.fixture
def runner_settings(nats_url: str, namespace: str) -> RunnerSettings:
    return RunnerSettings(
        nats_url=nats_url,
        nats_namespace=namespace,
        health_port=0,
        heartbeat_s=0.3,
        drain_s=2.0,
        concurrency=8,
    )


@pytest.fixture
async def harness(
    nats_client: Any, namespace: str, fake_llm: FakeLLM, runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> AsyncIterator[Harness]:
    app = RunnerApp(runner_settings, env=runner_env)
    await app.start()
    try:
        yield Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=app)
    finally:
        await app.stop()
