"""servicekit.runtime: every service starts, serves until SIGTERM/SIGINT, drains and exits the same way."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable

import pytest

from servicekit import runtime
from servicekit.runtime import serve_until_stopped

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_heap_freeze(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Freezing the test process's heap would outlive the test; record the call instead."""
    calls: list[str] = []
    monkeypatch.setattr(runtime, "freeze_startup_heap", lambda: calls.append("frozen"))
    return calls


def service(
    log: list[str],
    *,
    on_start: Callable[[], None] = lambda: None,
    hang_in_start: bool = False,
    on_drain: Callable[[], None] = lambda: None,
    hang_in_drain: bool = False,
    fail: bool = False,
) -> Callable[[], contextlib.AbstractAsyncContextManager[None]]:
    """A service that records its lifetime in ``log``; once it serves, it signals itself."""

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[None]:
        log.append("starting")
        try:
            on_start()
            if hang_in_start:
                await asyncio.Event().wait()
            if fail:
                raise RuntimeError("cannot start")
            log.append("serving")
            signal.raise_signal(signal.SIGTERM)
            yield
            log.append("draining")
            on_drain()
            if hang_in_drain:
                await asyncio.Event().wait()
            log.append("drained")
        finally:
            log.append("closed")

    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_drains_and_exits_zero(signum: signal.Signals, no_heap_freeze: list[str]) -> None:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def run() -> AsyncIterator[None]:
        log.append("serving")
        signal.raise_signal(signum)
        yield
        log.append("drained")

    assert asyncio.run(serve_until_stopped("demo", run)) == 0
    assert log == ["serving", "drained"]
    assert no_heap_freeze == ["frozen"]  # once, when it serves
    # The handlers are the process's again.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_a_signal_during_start_up_cancels_it_and_exits_zero(no_heap_freeze: list[str]) -> None:
    log: list[str] = []
    run = service(log, on_start=lambda: signal.raise_signal(signal.SIGTERM), hang_in_start=True)
    assert asyncio.run(serve_until_stopped("demo", run)) == 0
    assert log == ["starting", "closed"]
    assert no_heap_freeze == []


def test_a_second_signal_cuts_the_drain_short_and_exits_one() -> None:
    log: list[str] = []
    run = service(log, on_drain=lambda: signal.raise_signal(signal.SIGINT), hang_in_drain=True)
    assert asyncio.run(serve_until_stopped("demo", run)) == 1
    assert log == ["starting", "serving", "draining", "closed"]


def test_an_error_exits_one(caplog: pytest.LogCaptureFixture) -> None:
    log: list[str] = []
    assert asyncio.run(serve_until_stopped("demo", service(log, fail=True))) == 1
    assert log == ["starting", "closed"]
    assert "demo stopped on an error" in caplog.text and "cannot start" in caplog.text


def test_run_service_as_a_process_exits_zero_on_sigterm() -> None:
    """The whole path of a ``__main__``: settings → logging → uvloop → serve → SIGTERM → drain → 0."""
    program = textwrap.dedent(
        """
        import asyncio, contextlib, sys
        import uvloop
        from servicekit.runtime import run_service
        from servicekit.settings import ServiceSettings

        @contextlib.asynccontextmanager
        async def demo():
            assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
            print("serving", flush=True)
            yield
            await asyncio.sleep(0)
            print("drained", flush=True)

        sys.exit(run_service("demo", ServiceSettings(), demo, loop_factory=uvloop.new_event_loop))
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", program],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"LOG_LEVEL": "INFO", "PATH": ""},
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "serving\n"
        started = [proc.stderr.readline()]
        while "demo ready" not in started[-1]:  # a signal before this would cancel the start-up instead
            started.append(proc.stderr.readline())
            assert started[-1], "".join(started)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert out == "drained\n"
    assert "demo: SIGTERM, draining" in err and "demo stopped" in err
    assert "Traceback" not in "".join(started) + err


def test_a_ready_service_freezes_its_startup_heap_and_collects_its_young_objects_less_often() -> None:
    # In a process of its own: both settings outlive the call.
    code = textwrap.dedent(
        """
        import gc
        from servicekit import runtime
        before = gc.get_threshold()
        runtime.freeze_startup_heap()
        print(gc.get_freeze_count() > 0, before[1:] == gc.get_threshold()[1:], gc.get_threshold()[0])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "True", str(runtime.YOUNG_GC_THRESHOLD)]
    assert runtime.YOUNG_GC_THRESHOLD > 700  # CPython's default
