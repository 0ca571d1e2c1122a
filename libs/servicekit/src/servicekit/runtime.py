"""How every service process starts and stops: one shape for each ``__main__``.

::

    def main() -> int:
        settings = RunnerSettings()
        return run_service("runner", settings, lambda: create_app(settings), loop_factory=uvloop.new_event_loop)

:func:`run_service` takes the settings, sets up logging and tracing from them, runs an event loop
from ``loop_factory`` (uvloop in every service; the service passes it, so servicekit depends on no
loop implementation) and, in it, :func:`serve_until_stopped`: ``async with service():`` (start-up),
then serve until SIGTERM or SIGINT, then leave the block — the service's own graceful drain.

Signals, the same in every service:

- the first SIGTERM/SIGINT once the service serves: leave the block and drain; exit code **0**;
- a signal during start-up: cancel the start-up (nothing is served yet, so nothing to drain); exit 0;
- a second signal during the drain: cancel the drain (the operator insists); exit code **1**, since
  work in hand may have been cut short;
- an error in start-up, serving or drain: logged with its traceback; exit code 1.

uvicorn is told nothing of signals (:class:`QuietServer`): it would take SIGTERM/SIGINT over and raise
them again on exit. The gateway runs its uvicorn server through :func:`serving_uvicorn` under the same
helper; every other service serves its health port with :class:`servicekit.health.HealthServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import uvicorn

from .settings import ServiceSettings
from .telemetry import setup_logging, setup_tracing

log = logging.getLogger(__name__)

#: What ``run_service`` runs: a factory of the service's lifetime as an async context manager —
#: entering it starts the service, leaving it drains and closes it.
Service = Callable[[], AbstractAsyncContextManager[Any]]
LoopFactory = Callable[[], asyncio.AbstractEventLoop]

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


#: Allocations (net of deallocations) between two collections of the youngest generation; CPython's
#: default is 700. Under load a service allocates in bursts that mostly die young: at 700 the
#: collector ran 450 times in 1,024 streams and took 9 % of the runner's and gateway's CPU; at 5,000,
#: 20–40 times and 3–4 %, with no longer pauses (the longest, 10–30 ms, are middle-generation ones
#: either way). See docs/performance.md.
YOUNG_GC_THRESHOLD = 5000


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, SDKs, schemas, clients) out of the collector's reach,
    and collect the youngest generation less often (:data:`YOUNG_GC_THRESHOLD`).

    A service's startup heap is large and lives forever; left in the oldest generation, every full
    collection walks all of it again: pauses of 40–150 ms were measured under streaming load, each
    one a stall of every open stream. After :func:`gc.freeze` a full collection sees only what was
    allocated since. Called once, when the service is ready to serve (:func:`serve_until_stopped`).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def run_service(
    name: str, settings: ServiceSettings, service: Service, *, loop_factory: LoopFactory | None = None
) -> int:
    """Run one service process to its end and return its exit code (see the module's docstring).

    In order: logging (``settings.log_level``) → tracing (``settings.otlp_endpoint``; the last spans
    are flushed on the way out) → an event loop from ``loop_factory`` → :func:`serve_until_stopped`.
    """
    setup_logging(settings.log_level)
    provider = setup_tracing(name, settings.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            return runner.run(serve_until_stopped(name, service))
    finally:
        provider.shutdown()


async def serve_until_stopped(name: str, service: Service) -> int:
    """Start ``service()``, serve until SIGTERM/SIGINT, drain; the exit code. Call it in the main thread."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    stop = asyncio.Event()
    phase = "starting"
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        what = signal.Signals(signum).name
        if phase == "serving" and signals == 1:
            log.info("%s: %s, draining", name, what)
            stop.set()
        elif phase == "starting":
            log.info("%s: %s during start-up, stopping", name, what)
            main.cancel()
        else:
            log.warning("%s: %s again, stopping before the drain is over", name, what)
            main.cancel()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        async with service():
            phase = "serving"
            freeze_startup_heap()
            log.info("%s ready", name)
            await stop.wait()
            phase = "draining"
        log.info("%s stopped", name)
        return 0
    except asyncio.CancelledError:
        if not signals:
            raise
        if phase == "starting":
            log.info("%s stopped during start-up", name)
            return 0
        log.error("%s stopped before its drain was over", name)
        return 1
    except Exception:
        log.critical("%s stopped on an error", name, exc_info=True)
        return 1
    finally:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signals to the process (uvicorn would take SIGTERM/SIGINT over and
    raise them again on exit) and says when it listens (:attr:`listening`)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.listening.set()


@contextlib.asynccontextmanager
async def serving_uvicorn(config: uvicorn.Config) -> AsyncIterator[QuietServer]:
    """Serve ``config`` for the block: entered once uvicorn has run the app's lifespan start-up and
    listens; leaving it is uvicorn's graceful shutdown (no new connections, open requests finish
    within ``timeout_graceful_shutdown``, then the lifespan's shutdown)."""
    server = QuietServer(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    listening = asyncio.create_task(server.listening.wait())
    try:
        await asyncio.wait({task, listening}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        # Stopped during start-up: nothing is served yet, so nothing to drain.
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise
    finally:
        listening.cancel()
    if not server.listening.is_set():
        task.result()  # raises what stopped it
        raise RuntimeError("uvicorn stopped before it listened")
    try:
        yield server
    finally:
        server.should_exit = True
        await task
