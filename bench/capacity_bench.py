"""Capacity: many open streams through one gateway process, and relayed tokens per second.

Two phases, each taken against the fake LLM called directly and then through the gateway, in the same run:

1. **Open streams**: ``streams`` paced streams (the provider at ``tokens_per_s`` tokens a second, a few
   a second as a slow model or a long answer does) started evenly over ``ramp_s`` and each longer than
   the ramp, so that at the end of the ramp all of them are open at once. Reported: how many completed
   whole (every token), the most open at once, the gateway's resident memory before and at the peak and
   so its memory per open stream, and each process's CPU time per relayed token.
2. **Tokens per second**: ``concurrency`` streams at 20 tokens a second kept open (each replaced as it
   ends) for a while: relayed tokens/s and the inter-token gap p99, next to the same load sent directly.

The load generator runs on the same machine (2 cores here), so its own CPU is part of both sides.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import httpx

from devstack.stack import Stack

from .loadgen import StreamResult, make_client, percentile, stream_once
from .stack_bench import DIRECT_HEADERS, bench_stack, process_cpu_s, seed_bench_user

OPEN_MODEL = "bench-open"
RATE_MODEL = "bench-rate"
RATE_TOKENS_PER_S = 20.0
RATE_TOKENS = 100


def rss_mib(pid: int | None) -> float:
    """A process's resident memory now, in MiB (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _cpu(watch: dict[str, int | None]) -> dict[str, float]:
    """Each watched process's CPU time so far, in seconds."""
    return {name: process_cpu_s(pid) for name, pid in watch.items()}


def _spent(watch: dict[str, int | None], before: dict[str, float]) -> dict[str, float]:
    """Each watched process's CPU time since ``before``."""
    return {name: spent - before[name] for name, spent in _cpu(watch).items()}


def _text(tokens: int) -> str:
    return " ".join(f"w{i}" for i in range(tokens))


class _Load:
    """Streams started on a schedule; counts what is open, what completed whole and what failed."""

    def __init__(self, client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.client, self.url, self.headers, self.body = client, url, headers, body
        self.open = self.peak_open = self.failed = 0
        self.results: list[StreamResult] = []
        self.errors: dict[str, int] = {}

    async def one(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        self.open += 1
        self.peak_open = max(self.peak_open, self.open)
        try:
            self.results.append(await stream_once(self.client, self.url, self.headers, self.body))
        except Exception as exc:  # counted and reported: a capacity run goes on past a failed stream
            self.failed += 1
            key = str(exc)[:120]
            self.errors[key] = self.errors.get(key, 0) + 1
        finally:
            self.open -= 1


async def _open_streams(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    *,
    streams: int,
    ramp_s: float,
    tokens: int,
    watch: dict[str, int | None],
) -> dict[str, Any]:
    """Phase 1 against one target; ``watch`` names the processes whose memory and CPU are reported."""
    load = _Load(client, url, headers, body)
    rss_before = {name: rss_mib(pid) for name, pid in watch.items()}
    cpu_before = _cpu(watch)
    rss_peak = dict(rss_before)
    rss_at_peak_open: dict[str, float] = dict(rss_before)
    start = time.perf_counter()
    tasks = [asyncio.ensure_future(load.one(ramp_s * i / streams)) for i in range(streams)]
    pending = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=0.5)
        now = {name: rss_mib(pid) for name, pid in watch.items()}
        rss_peak = {name: max(rss_peak[name], now[name]) for name in watch}
        if load.open >= load.peak_open:
            rss_at_peak_open = now
    wall = time.perf_counter() - start
    cpu = _spent(watch, cpu_before)
    relayed = sum(r.tokens for r in load.results)
    complete = sum(1 for r in load.results if r.tokens == tokens)
    return {
        "streams": streams,
        "completed_whole": complete,
        "failed": load.failed,
        "errors": load.errors,
        "peak_open": load.peak_open,
        "wall_s": wall,
        "relayed_tokens": relayed,
        "rss_mib": {name: {"before": rss_before[name], "peak": rss_peak[name]} for name in watch},
        "rss_per_open_stream_kib": {
            name: (rss_at_peak_open[name] - rss_before[name]) * 1024 / max(load.peak_open, 1) for name in watch
        },
        "cpu_s": cpu,
        "cpu_us_per_token": {name: spent / max(relayed, 1) * 1e6 for name, spent in cpu.items()},
    }


async def rate(
    client: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    body: dict[str, Any],
    *,
    concurrency: int,
    duration_s: float,
    watch: dict[str, int | None],
) -> dict[str, Any]:
    """Phase 2 against one target: ``concurrency`` streams kept open for ``duration_s`` (starts spread
    over one stream's length); tokens counted only between the end of that ramp and the end."""
    stream_s = RATE_TOKENS / RATE_TOKENS_PER_S
    load = _Load(client, url, headers, body)
    stop_at = time.perf_counter() + stream_s + duration_s

    async def worker(i: int) -> None:
        await asyncio.sleep(stream_s * i / concurrency)
        while time.perf_counter() < stop_at:
            await load.one(0)

    async def steady_cpu() -> dict[str, float]:
        await asyncio.sleep(stream_s)
        before = _cpu(watch)
        await asyncio.sleep(duration_s)
        return _spent(watch, before)

    steady_from = time.perf_counter() + stream_s
    measured = asyncio.ensure_future(steady_cpu())
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    cpu = await measured
    # tokens and CPU counted over the steady part only: after the ramp, before the end
    relayed = sum(1 for r in load.results for t in r.token_times() if steady_from <= t < stop_at)
    gaps = [g for r in load.results for g in r.gaps]
    return {
        "concurrency": concurrency,
        "offered_tokens_per_s": concurrency * RATE_TOKENS_PER_S,
        "relayed_tokens_per_s": relayed / duration_s,
        "streams": len(load.results),
        "failed": load.failed,
        "errors": load.errors,
        "gap_p50_ms": percentile(gaps, 50) * 1000,
        "gap_p99_ms": percentile(gaps, 99) * 1000,
        "cpu_us_per_token": {name: spent / max(relayed, 1) * 1e6 for name, spent in cpu.items()},
    }


async def run(
    quick: bool = False,
    streams: int = 5000,
    tokens_per_s: float = 2.0,
    ramp_s: float = 30.0,
    concurrencies: tuple[int, ...] = (250, 500, 1250),
    runners: int = 2,
) -> dict[str, Any]:
    if quick:
        streams, ramp_s, concurrencies = 300, 5.0, (100,)
    # each stream outlasts the ramp by a few seconds: at the ramp's end all are open at once
    open_tokens = int((ramp_s + 6.0) * tokens_per_s)
    per_runner = streams // runners + 64
    env = {
        "runner": {"RUNNER_CONCURRENCY": str(per_runner), "RUNNER_MAX_ACK_PENDING": str(streams + 256)},
        "gateway": {"GATEWAY_MAX_RUNS_STARTING": str(streams), "GATEWAY_MAX_IN_FLIGHT": str(streams + 256)},
    }
    async with bench_stack(runners=runners, service_env=env) as stack:
        return await _measure(stack, streams, ramp_s, tokens_per_s, open_tokens, concurrencies)


async def script_rate_model(fake_url: str | None, more: dict[str, tuple[str, float]] | None = None) -> None:
    """Script the tokens phase's model (and ``more``: model → text, tokens/s) in the fake LLM."""
    assert fake_url is not None, "a bench stack runs the fake LLM"
    models = {RATE_MODEL: (_text(RATE_TOKENS), RATE_TOKENS_PER_S), **(more or {})}
    async with httpx.AsyncClient() as h:
        for model, (text, tokens_per_s) in models.items():
            turn = {"text": text, "tokens_per_s": tokens_per_s}
            await h.put(f"{fake_url}/_fake/scripts/{model}", json={"turns": [turn]})


def rate_body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "Go on."}], "stream": True}


async def _measure(
    stack: Stack,
    streams: int,
    ramp_s: float,
    tokens_per_s: float,
    open_tokens: int,
    concurrencies: tuple[int, ...],
) -> dict[str, Any]:
    fake = stack.fakellm_url
    await script_rate_model(fake, {OPEN_MODEL: (_text(open_tokens), tokens_per_s)})
    gw_h, agents = seed_bench_user(stack, (OPEN_MODEL, RATE_MODEL))
    direct_url, gw_url = f"{fake}/v1/chat/completions", f"{stack.gateway_url}/v1/chat/completions"
    direct_h = DIRECT_HEADERS

    procs = stack.processes
    fakellm = {"fakellm": procs["fakellm"].pid}
    through = {name: p.pid for name, p in procs.items() if name != "fakellm" and not name.startswith("nats")}
    through.update(fakellm)
    results: dict[str, Any] = {}
    # no total timeout: a stream here may well last longer than a minute
    async with make_client(max(streams, *concurrencies), total_timeout_s=None) as client:
        for _ in range(10):  # warm both paths
            await stream_once(client, direct_url, direct_h, rate_body(RATE_MODEL))
            await stream_once(client, gw_url, gw_h, rate_body(agents[RATE_MODEL]))
        open_phase = {}
        for side, url, headers, model, watch in (
            ("direct", direct_url, direct_h, OPEN_MODEL, fakellm),
            ("gateway", gw_url, gw_h, agents[OPEN_MODEL], through),
        ):
            open_phase[side] = await _open_streams(
                client, url, headers, rate_body(model), streams=streams, ramp_s=ramp_s, tokens=open_tokens, watch=watch
            )
        results["open_streams"] = {"tokens_per_s_per_stream": tokens_per_s, "tokens_per_stream": open_tokens}
        results["open_streams"].update(open_phase)
        results["tokens_per_s"] = []
        for c in concurrencies:
            rate_phase = {}
            for side, url, headers, model, watch in (
                ("direct", direct_url, direct_h, RATE_MODEL, fakellm),
                ("gateway", gw_url, gw_h, agents[RATE_MODEL], through),
            ):
                rate_phase[side] = await rate(
                    client, url, headers, rate_body(model), concurrency=c, duration_s=10.0, watch=watch
                )
            results["tokens_per_s"].append(rate_phase)
    return results
