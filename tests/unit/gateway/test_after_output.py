"""Work that can wait for a run's first output (the next runs admitted ahead) is started then, once:
at the first event after ``started``, at the stream's close, or after a few milliseconds at most
(gateway.runs.RunStream.after_output)."""

from __future__ import annotations

import asyncio

import pytest

from contracts import RunStarted, Subjects, TextDelta
from gateway import runs
from gateway.runs import RunStream

pytestmark = pytest.mark.unit


def _stream() -> RunStream:
    return RunStream(None, Subjects("t"), "run1")  # type: ignore[arg-type]  # fed directly, no NATS


def _feed(run: RunStream, event: RunStarted | TextDelta) -> None:
    run._on_data(event.model_dump_json().encode())


async def test_it_starts_with_the_first_output_not_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "AFTER_OUTPUT_WITHIN_S", 60.0)
    run, calls = _stream(), []
    run.after_output(lambda: calls.append("ask"))
    _feed(run, RunStarted(run_id="run1", seq=0, runner_id="r"))
    _feed(run, TextDelta(run_id="run1", seq=1, delta="Hi"))
    _feed(run, TextDelta(run_id="run1", seq=2, delta=" there"))
    assert (await run.next(1)).seq == 0 and calls == []  # the run has started: not yet
    assert (await run.next(1)).seq == 1 and calls == ["ask"]  # its first output is on its way: now
    assert (await run.next(1)).seq == 2 and calls == ["ask"]  # once
    await run.close()
    assert calls == ["ask"] and run._output_timer is None


async def test_a_stream_that_closes_first_starts_it_then() -> None:
    run, calls = _stream(), []
    run.after_output(lambda: calls.append("ask"))
    await run.close()  # refused, failed or gone before any output: the work is not lost
    assert calls == ["ask"] and run._output_timer is None


async def test_a_run_slow_to_its_first_output_starts_it_after_the_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runs, "AFTER_OUTPUT_WITHIN_S", 0.01)
    run, called = _stream(), asyncio.Event()
    run.after_output(called.set)
    _feed(run, RunStarted(run_id="run1", seq=0, runner_id="r"))
    await run.next(1)
    async with asyncio.timeout(2):  # a provider thinking for seconds holds nothing back
        await called.wait()
    await run.close()
