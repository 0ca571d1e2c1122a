"""A small load generator: time to first token, inter-token gaps and throughput of OpenAI-style streams.

The same code measures the fake LLM called directly and the same model through the gateway, so the
difference is what Switchboard adds. It shares the machine with what it measures (2 cores here): its
own CPU use is part of both sides of every comparison, which is why it is built on aiohttp (about a
quarter of httpx's CPU per streamed chunk).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aiohttp
import orjson


@dataclass
class StreamResult:
    ttft: float  # seconds from sending the request to the first content token
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive content tokens
    total: float = 0.0
    tokens: int = 0
    start: float = 0.0  # time.perf_counter() when the request was sent

    def token_times(self) -> list[float]:
        """When each content token arrived (``time.perf_counter()`` values)."""
        at = self.start + self.ttft
        times = [at]
        for gap in self.gaps:
            at += gap
            times.append(at)
        return times


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def added_ms(through: list[float], direct: list[float]) -> dict[str, float]:
    """What ``through`` adds to ``direct`` (seconds each) at p50 and p99, in ms: the same percentile of
    each, minus."""
    return {q: (percentile(through, p) - percentile(direct, p)) * 1000 for q, p in (("p50", 50), ("p99", 99))}


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000,
        "p99": percentile(values, 99) * 1000,
        "mean": (statistics.fmean(values) * 1000) if values else float("nan"),
    }


async def stream_once(client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict) -> StreamResult:
    """POST a streaming chat completion (or a streaming response) and time its content deltas."""
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    tokens = 0
    async with client.post(url, headers=headers, data=orjson.dumps(body)) as resp:
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {(await resp.read())[:300]!r}")
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            data = line[6:].strip()
            if data == b"[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"stream error: {chunk['error']}")
            if "type" in chunk:  # a Responses event (`data:` carries its type; the `event:` line is skipped)
                kind = chunk["type"]
                if kind in ("response.completed", "response.failed", "response.incomplete"):
                    if kind != "response.completed":
                        raise RuntimeError(f"stream ended with {kind}")
                    break
                content = chunk.get("delta") if kind == "response.output_text.delta" else None
            else:
                choices = chunk.get("choices") or ()
                content = choices[0].get("delta", {}).get("content") if choices else None
            if content:
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)  # type: ignore[operator]
                last = now
                # The fake LLM's tokens are words: a delta may carry several that reached the runner
                # together (the gap is the wait between deltas, what a reader of the stream sees).
                tokens += len(content.split())
        await resp.read()  # to the end of the body, so the connection is reused
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream carried no content")
    return StreamResult(ttft=first - start, gaps=gaps, total=end - start, tokens=tokens, start=start)


async def complete_once(client: aiohttp.ClientSession, url: str, headers: dict[str, str], body: dict) -> float:
    start = time.perf_counter()
    async with client.post(url, headers=headers, data=orjson.dumps(body)) as resp:
        payload = await resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {payload[:300]!r}")
    return time.perf_counter() - start


async def sequential_streams(client, url, headers, body, n: int) -> list[StreamResult]:
    return [await stream_once(client, url, headers, body) for _ in range(n)]


async def interleaved_streams(
    client: aiohttp.ClientSession, targets: list[tuple[str, dict[str, str], dict]], n: int
) -> list[list[StreamResult]]:
    """``n`` streams of each target (url, headers, body), one at a time, the targets taken in turn:
    what the machine is doing at any moment weighs on every target alike. One list per target."""
    results: list[list[StreamResult]] = [[] for _ in targets]
    for _ in range(n):
        for out, (url, headers, body) in zip(results, targets, strict=True):
            out.append(await stream_once(client, url, headers, body))
    return results


async def concurrent_streams(
    client, url, headers, body, *, concurrency: int, total: int, ramp_s: float = 0.0, warmup: int = 0
) -> tuple[list[StreamResult], float]:
    """``total`` streams, ``concurrency`` at a time. Returns the results and the wall time.

    With ``ramp_s`` the workers' first requests are spread evenly over that time instead of all
    leaving at once, so the load settles into ``concurrency`` open streams whose starts are spread
    out, as real traffic's are; the first ``warmup`` streams started (the ramp) are not reported.
    """
    started = 0
    results: list[StreamResult] = []

    async def worker(i: int) -> None:
        nonlocal started
        if ramp_s:
            await asyncio.sleep(ramp_s * i / concurrency)
        while started < total:
            n = started
            started += 1
            result = await stream_once(client, url, headers, body)
            if n >= warmup:
                results.append(result)

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return results, time.perf_counter() - start


async def concurrent_completions(client, url, headers, body, *, concurrency: int, total: int) -> float:
    """Wall time of ``total`` non-streaming requests, ``concurrency`` at a time."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await complete_once(client, url, headers, body)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start


def make_client(concurrency: int, total_timeout_s: float | None = 60.0) -> aiohttp.ClientSession:
    # Idle connections expire before the servers' own keep-alive timeout (uvicorn: 5 s), so a phase never
    # reuses a connection the other side already closed while another phase ran.
    connector = aiohttp.TCPConnector(limit=concurrency + 8, keepalive_timeout=2.0)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=total_timeout_s, sock_read=60.0)
    )
