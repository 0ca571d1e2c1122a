"""The runner's fleet heartbeat on real NATS: about once a second, its id in a header, the progress of
every run it has taken (a call in flight with the output received so far, a run still waiting for its
admission), and a last, empty heartbeat when it stops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from contracts import RUNNER_ID_HEADER, RunnerHeartbeat, Subjects
from fakellm.server import FakeLLM
from runner.app import RunnerApp
from runner.settings import RunnerSettings

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration

SLOW = [{"text": "word " * 200, "tokens_per_s": 20}]  # ~10 s unless cancelled


class Beats:
    """Every heartbeat heard, and a way to wait for one that satisfies a condition."""

    def __init__(self) -> None:
        self.heard: list[tuple[dict[str, str], RunnerHeartbeat]] = []
        self._changed = asyncio.Condition()

    async def on_msg(self, msg: Any) -> None:
        async with self._changed:
            self.heard.append((dict(msg.headers or {}), RunnerHeartbeat.model_validate_json(msg.data)))
            self._changed.notify_all()

    async def until(self, check: Callable[[RunnerHeartbeat], bool]) -> RunnerHeartbeat:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: any(check(b) for _, b in self.heard)), WAIT_S)
            return next(b for _, b in reversed(self.heard) if check(b))


async def test_heartbeats_report_each_run_s_progress(
    nats_client: Any, namespace: str, fake_llm: FakeLLM, runner_settings: RunnerSettings, runner_env: dict[str, str]
) -> None:
    settings = runner_settings.model_copy(update={"runner_id": "runner-hb", "fleet_heartbeat_s": 0.2, "drain_s": 0.2})
    app = RunnerApp(settings, env=runner_env)
    beats = Beats()
    sub = await nats_client.subscribe(Subjects(namespace).runner_heartbeat, cb=beats.on_msg)
    await app.start()
    stopped = False
    try:
        h = Harness(nc=nats_client, subjects=Subjects(namespace), fake=fake_llm, app=app)
        first = await beats.until(lambda b: True)
        assert (first.runner_id, first.interval_s, first.runs) == ("runner-hb", 0.2, [])
        assert all(headers[RUNNER_ID_HEADER] == "runner-hb" for headers, _ in beats.heard)

        await h.script("m-hb", SLOW)
        req = make_request("m-hb", reservation_id="res-hb")
        got, _done, _ = await h.start(req)
        beat = await beats.until(lambda b: any(r.usage.output_tokens >= 5 for r in b.runs))
        [progress] = beat.runs
        started = got.events[0]
        assert started.type == "started" and started.runner_id == beat.runner_id  # the id RunStarted names
        assert (progress.run_id, progress.reservation_id, progress.user_id, progress.model) == (
            req.run_id,
            "res-hb",
            "u1",
            "m-hb",
        )
        assert (progress.call_index, progress.calls_recorded, progress.provider) == (0, 0, "openai")
        assert progress.usage.input_tokens > 0
        streamed = "".join(d.delta for d in got.of("text_delta")).split()  # (deltas read together are joined)
        assert progress.usage.output_tokens <= len(streamed)  # never more than was streamed

        # A run taken but still waiting for billing's go-ahead is reported too (nothing in flight).
        waiting = make_request("m-hb", await_admission=True)
        await h.start(waiting)
        beat = await beats.until(lambda b: any(r.run_id == waiting.run_id for r in b.runs))
        [w] = [r for r in beat.runs if r.run_id == waiting.run_id]
        assert (w.call_index, w.calls_recorded) == (None, 0)

        count = len(beats.heard)
        await app.stop()
        stopped = True
        # The last word of a runner stopping on purpose: no runs (nothing for billing to close).
        assert len(beats.heard) > count
        last = beats.heard[-1][1]
        assert last.runs == [] and last.runner_id == "runner-hb"
    finally:
        if not stopped:
            await app.stop()
        await sub.unsubscribe()
