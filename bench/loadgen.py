"""A small load generator: time to first token, inter-token gaps and throughput of OpenAI-style streams.

The same code measures the fake LLM called directly and the same model through the gateway, so the
difference is what Switchboard adds. It shares the machine with what it measures (2 cores here): its
own CPU use is part of both sides of every comparison.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import httpx
import orjson


@dataclass
class StreamResult:
    ttft: float  # seconds from sending the request to the first content token
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive content tokens
    total: float = 0.0
    tokens: int = 0


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by the nearest-rank method."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "p50": percentile(values, 50) * 1000,
        "p99": percentile(values, 99) * 1000,
        "mean": (statistics.fmean(values) * 1000) if values else float("nan"),
    }


async def stream_once(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict) -> StreamResult:
    """POST a streaming chat completion and time its content deltas."""
    start = time.perf_counter()
    first = last = None
    gaps: list[float] = []
    tokens = 0
    async with client.stream("POST", url, headers=headers, content=orjson.dumps(body)) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {(await resp.aread())[:300]!r}")
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = orjson.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"stream error: {chunk['error']}")
            choices = chunk.get("choices") or ()
            if choices and choices[0].get("delta", {}).get("content"):
                now = time.perf_counter()
                if first is None:
                    first = now
                else:
                    gaps.append(now - last)  # type: ignore[operator]
                last = now
                tokens += 1
    end = time.perf_counter()
    if first is None:
        raise RuntimeError("the stream carried no content")
    return StreamResult(ttft=first - start, gaps=gaps, total=end - start, tokens=tokens)


async def complete_once(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict) -> float:
    start = time.perf_counter()
    resp = await client.post(url, headers=headers, content=orjson.dumps(body))
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")
    return time.perf_counter() - start


async def sequential_streams(client, url, headers, body, n: int) -> list[StreamResult]:
    return [await stream_once(client, url, headers, body) for _ in range(n)]


async def concurrent_streams(
    client, url, headers, body, *, concurrency: int, total: int
) -> tuple[list[StreamResult], float]:
    """``total`` streams, ``concurrency`` at a time. Returns the results and the wall time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(total):
        queue.put_nowait(i)
    results: list[StreamResult] = []

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results.append(await stream_once(client, url, headers, body))

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
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


def make_client(concurrency: int) -> httpx.AsyncClient:
    # Idle connections expire before the servers' own keep-alive timeout (uvicorn: 5 s), so a phase never
    # reuses a connection the other side already closed while another phase ran.
    limits = httpx.Limits(
        max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8, keepalive_expiry=2.0
    )
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0))
