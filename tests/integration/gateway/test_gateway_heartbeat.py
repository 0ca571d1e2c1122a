"""The gateway announces itself (``gateway.heartbeat.v1``) and names itself in the runs whose client waits
on it, so that runners can stop those runs if it dies; a run that outlives its client on purpose (a
request with an ``Idempotency-Key``, a background response) names no gateway (real NATS)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts import GatewayHeartbeat, RunCompleted, TextDelta

from .conftest import KEY, RunContext, Stack
from .test_chat_stream import USAGE

pytestmark = pytest.mark.integration


async def short(run: RunContext) -> None:
    await run.start()
    await run.emit(TextDelta, delta="ok")
    await run.emit(RunCompleted, finish_reason="stop", usage=USAGE)


async def _heard(stack: Stack) -> GatewayHeartbeat:
    heard: asyncio.Future[GatewayHeartbeat] = asyncio.get_running_loop().create_future()

    async def on(msg: Any) -> None:
        if not heard.done():
            heard.set_result(GatewayHeartbeat.model_validate_json(msg.data))

    sub = await stack.nc.subscribe(stack.subjects.gateway_heartbeat, cb=on)
    try:
        return await asyncio.wait_for(heard, 5)
    finally:
        await sub.unsubscribe()


async def test_runs_name_the_gateway_their_client_waits_on(stack: Stack) -> None:
    beat = await _heard(stack)
    assert beat.gateway_id.startswith("gw-") and 0 < beat.interval_s <= 30
    stack.fakes.agent("agent_hb", short)
    async with stack.http() as http:
        headers = {"Authorization": f"Bearer {KEY}"}
        chat = {"model": "agent_hb", "messages": [{"role": "user", "content": "hi"}]}
        assert (await http.post("/v1/chat/completions", json=chat, headers=headers)).status_code == 200
        assert stack.fakes.run_requests[-1].gateway_id == beat.gateway_id
        assert (
            await http.post("/v1/responses", json={"model": "agent_hb", "input": "hi"}, headers=headers)
        ).status_code == 200
        assert stack.fakes.run_requests[-1].gateway_id == beat.gateway_id
        # Outlives its client on purpose: a retry may attach on any gateway.
        keyed = dict(headers, **{"Idempotency-Key": "hb-1"})
        assert (await http.post("/v1/chat/completions", json=chat, headers=keyed)).status_code == 200
        assert stack.fakes.run_requests[-1].gateway_id is None
        background = {"model": "agent_hb", "input": "hi", "background": True}
        assert (await http.post("/v1/responses", json=background, headers=headers)).status_code == 200
        assert stack.fakes.run_requests[-1].gateway_id is None
