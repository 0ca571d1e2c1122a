"""Where the time to first token goes at light load: a timeline of one request across processes.

``python -m bench.probes timeline`` runs the gateway and the runner with :func:`install` active (through
``bench/timeline_hook/sitecustomize.py``, which Python imports at start-up when that folder is on
``PYTHONPATH``). Each of :data:`POINTS` then appends the wall-clock time at which its function was
entered to a file per process; the probe adds when its own request left and when its first content
token arrived. Requests go one at a time, so each one's marks lie between its start and the next
request's. :func:`steps` takes, for each request, the first mark of each point after the previous one,
and gives the median time of each step.

Each mark costs a few microseconds itself (:func:`mark_cost_us` measures it); the probe prints that
next to the steps. Nothing here runs unless ``SB_TIMELINE_DIR`` names a folder to write to.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.util
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ENV = "SB_TIMELINE_DIR"

#: (module, function, step name), in the order a chat completion stream reaches them. The name says
#: what has just happened when the function is entered.
POINTS: tuple[tuple[str, str, str], ...] = (
    ("gateway.httpguard", "GuardedHttpToolsProtocol.data_received", "gateway: request bytes read"),
    ("gateway.middleware", "ObservabilityMiddleware.__call__", "gateway: HTTP parsed, request task running"),
    ("gateway.routes.chat", "endpoint", "gateway: past the middleware"),
    ("gateway.routes.chat", "parse_chat_request", "gateway: key checked, body read"),
    ("gateway.auth", "Authenticator.agent", "gateway: body validated"),
    ("gateway.orchestration", "start_run", "gateway: agent and rate limit checked"),
    ("gateway.orchestration", "encode_run", "gateway: run request built"),
    ("gateway.offers", "_ask", "gateway: run encoded, its events subscribed"),
    ("runner.offers", "OfferLane._on_offer", "runner: offer received (NATS hop)"),
    ("runner.worker", "Worker._handle", "runner: offer taken, run task running"),
    ("runner.worker", "Worker._execute", "runner: run request decoded, agent built"),
    ("runner.agent", "AgentRun._model_call", "runner: run started"),
    ("aiohttp.client", "ClientSession._request", "runner: provider request built"),
    ("aiohttp.client_proto", "ResponseHandler.data_received", "runner: provider's answer begins (its head read)"),
    ("runner.providers.openai_provider", "response_info", "runner: provider's first event read"),
    ("runner.emitter", "EventEmitter.emit", "runner: first delta published"),
    ("gateway.runs", "RunStream._on_data", "gateway: first delta received (NATS hop)"),
)
#: The points whose mark depends on the call: only a text delta counts as the first delta.
_FIRST_DELTA = {"runner: first delta published", "gateway: first delta received (NATS hop)"}
CLIENT_START = "client: request sent"
CLIENT_FIRST = "client: first token read"


class _Marks:
    def __init__(self, folder: Path) -> None:
        self._fd = os.open(folder / f"{os.getpid()}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def __call__(self, step: str, at_ns: int | None = None) -> None:
        os.write(self._fd, f"{time.time_ns() if at_ns is None else at_ns}\t{step}\n".encode())


_marks: _Marks | None = None


def mark(step: str, at_ns: int | None = None) -> None:
    if _marks is not None:
        _marks(step, at_ns)


def _is_text_delta(step: str, args: tuple[Any, ...]) -> bool:
    if step.startswith("runner"):
        return len(args) > 1 and getattr(args[1], "__name__", "") == "TextDelta"
    data = args[1] if len(args) > 1 else b""
    return isinstance(data, bytes | bytearray) and b'"type":"text_delta"' in data


def _wrap(fn: Callable[..., Any], step: str) -> Callable[..., Any]:
    check = _is_text_delta if step in _FIRST_DELTA else None
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def marked_async(*args: Any, **kwargs: Any) -> Any:
            if check is None or check(step, args):
                mark(step)
            return await fn(*args, **kwargs)

        return marked_async

    @functools.wraps(fn)
    def marked(*args: Any, **kwargs: Any) -> Any:
        if check is None or check(step, args):
            mark(step)
        return fn(*args, **kwargs)

    return marked


def _patch(module: Any) -> None:
    for name, path, step in POINTS:
        if name != module.__name__:
            continue
        *owners, attr = path.split(".")
        target = module
        for owner in owners:
            target = getattr(target, owner)
        setattr(target, attr, _wrap(getattr(target, attr), step))


class _Finder(importlib.abc.MetaPathFinder):
    """Patches a module of :data:`POINTS` as it is imported, before anything imports names from it."""

    modules = frozenset(name for name, _, _ in POINTS)

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.modules:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _patch(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Mark :data:`POINTS` in this process, if ``SB_TIMELINE_DIR`` is set (call before the service imports)."""
    global _marks
    folder = os.environ.get(ENV)
    if not folder or _marks is not None:
        return
    _marks = _Marks(Path(folder))
    sys.meta_path.insert(0, _Finder())


def mark_cost_us(scratch: Path, n: int = 20_000) -> float:
    """What one mark costs, in µs (written to a file in ``scratch``, not among the marks read)."""
    marks = _Marks(scratch)
    start = time.perf_counter()
    for _ in range(n):
        marks("x")
    return (time.perf_counter() - start) / n * 1e6


def read(folder: Path) -> list[tuple[int, str]]:
    marks = []
    for file in folder.glob("*.log"):
        for line in file.read_text().splitlines():
            at, _, step = line.partition("\t")
            marks.append((int(at), step))
    marks.sort()
    return marks


def steps(marks: Iterable[tuple[int, str]]) -> tuple[dict[str, float], int]:
    """Median µs of each step (from the previous one), over the requests whose every step was seen;
    and how many those were."""
    order = [CLIENT_START, *(step for _, _, step in POINTS), CLIENT_FIRST]
    requests: list[list[tuple[int, str]]] = []
    for at, step in marks:
        if step == CLIENT_START:
            requests.append([])
        if requests:
            requests[-1].append((at, step))
    durations: dict[str, list[float]] = {step: [] for step in order[1:]}
    complete = 0
    for request in requests:
        times: list[int] = []
        position = 0
        for at, step in request:
            if position < len(order) and step == order[position]:
                times.append(at)
                position += 1
        if position < len(order):
            continue
        complete += 1
        for step, before, after in zip(order[1:], times[:-1], times[1:], strict=True):
            durations[step].append((after - before) / 1000)
    return {step: round(statistics.median(v), 1) for step, v in durations.items() if v}, complete
