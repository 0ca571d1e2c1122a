"""Switchboard next to LiteLLM's proxy, in the same run, in front of the same fake LLM (issue #16's
"at least 10× LiteLLM in the same run").

``python -m bench.compare --litellm PATH [--workers N] [--rounds N]``. ``PATH`` is the ``litellm``
command of an installation of its own (it is no dependency of this repository)::

    python3.11 -m venv /tmp/litellm-env
    /tmp/litellm-env/bin/pip install 'litellm[proxy]==1.108.7'
    .venv/bin/python -m bench.compare --litellm /tmp/litellm-env/bin/litellm

The bench stack starts as ``python -m bench.probes`` starts it (one process of each service, the local
NATS / PostgreSQL / Redis). LiteLLM's proxy starts with a config that names the fake LLM's two bench
models (an OpenAI-compatible provider each), a master key, no database, its access log off (the
gateway logs at ``WARNING`` here), ``--workers`` uvicorn workers (1, its default). Then, every phase
taken in turn on the three targets — the fake LLM called directly, Switchboard, LiteLLM — each target's
part starting once every watched process is idle (:data:`QUIET_SHARE`):

1. light load: streams of the instant model one at a time, each proxy in a pass of its own with the
   provider called directly, the two taken request by request: added time to first token p50 / p99;
2. 64 open streams of the paced model (starts spread over one stream's length, each replaced as it
   ends): added time to first token p99 and added inter-token gap p99;
3. 64 streams of the paced model opened at the same instant: added time to first token p99;
4. saturation: 1,024 streams of the instant model, 64 at a time: streams/s, and each proxy's CPU per
   stream (LiteLLM: its processes; Switchboard: the gateway, runner and billing, NATS, PostgreSQL).

Each round prints one JSON line; the last line is a Markdown table of the medians over the rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from devstack.procs import ManagedProcess, free_port

from .loadgen import (
    StreamResult,
    added_ms,
    concurrent_streams,
    interleaved_streams,
    make_client,
    percentile,
    sequential_streams,
)
from .stack_bench import (
    DIRECT_HEADERS,
    INSTANT,
    PACED,
    PACED_STREAM_S,
    bench_stack,
    chat_body,
    infrastructure_cpu_s,
    infrastructure_spent,
    process_cpu_s,
    script_models,
    seed_bench_user,
)

SERVICES = ("gateway", "runner", "billing")
#: LiteLLM's config: the fake LLM's two models, each an OpenAI-compatible provider at ``BENCH_PROVIDER_URL``.
LITELLM_CONFIG = "model_list:\n" + "".join(
    f"  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n"
    "      api_base: os.environ/BENCH_PROVIDER_URL\n      api_key: sk-fake\n"
    for m in (INSTANT, PACED)
)
#: uvicorn's logging with the access log at WARNING (one line per request otherwise).
QUIET_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"default": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "WARNING"},
        "uvicorn.error": {"level": "WARNING"},
        "uvicorn.access": {"handlers": ["default"], "level": "WARNING", "propagate": False},
    },
}
STARTUP_S = 180.0


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (uvicorn's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(c) for c in children.read_text().split()] if children.exists() else []
    return process_cpu_s(pid) + sum(_tree_cpu_s(k) for k in kids)


@contextlib.asynccontextmanager
async def litellm_proxy(
    command: str, provider_url: str, workers: int
) -> AsyncIterator[tuple[str, dict[str, str], int]]:
    """LiteLLM's proxy in front of ``provider_url``: its base URL, a client's headers and its pid."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-litellm-"))
    (workdir / "config.yaml").write_text(LITELLM_CONFIG)
    (workdir / "logging.json").write_text(json.dumps(QUIET_LOGGING))
    key = f"sk-{secrets.token_hex(24)}"
    port = free_port()
    env = {**os.environ, "LITELLM_MASTER_KEY": key, "BENCH_PROVIDER_URL": f"{provider_url}/v1", "LITELLM_LOG": "ERROR"}
    argv = [command, "--config", str(workdir / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--num_workers", str(workers), "--log_config", str(workdir / "logging.json")]
    url = f"http://127.0.0.1:{port}"
    proxy = ManagedProcess(
        "litellm", argv, log_path=workdir / "litellm.log", env=env, ready_url=f"{url}/health/liveliness"
    )
    proxy.start()
    try:
        await asyncio.to_thread(proxy.wait_ready, STARTUP_S)
        assert proxy.pid is not None
        yield url, {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, proxy.pid
    finally:
        await asyncio.to_thread(proxy.stop, 15.0)


Target = tuple[str, dict[str, str], str, str]  # url, headers, instant model, paced model
CpuReaders = dict[str, Callable[[], float]]

#: A phase starts once every watched process used less than this share of a core over a quarter second
#: (work a proxy does after its answers, such as logging callbacks, would weigh on the next target).
QUIET_SHARE = 0.05
QUIET_WAIT_S = 30.0


async def _quiet(readers: CpuReaders) -> float:
    """Wait until the processes ``readers`` read are idle (at most :data:`QUIET_WAIT_S`); seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < QUIET_WAIT_S:
        before = sum(read() for read in readers.values())
        await asyncio.sleep(0.25)
        if sum(read() for read in readers.values()) - before < QUIET_SHARE * 0.25 * len(readers):
            break
    return time.monotonic() - start


def _p(values: list[float], q: int = 99) -> float:
    return round(percentile(values, q) * 1000, 2)


def _added(through: list[StreamResult], direct: list[StreamResult], q: str) -> float:
    return round(added_ms([r.ttft for r in through], [r.ttft for r in direct])[q], 2)


def _gaps(results: list[StreamResult]) -> list[float]:
    return [g for r in results for g in r.gaps]


async def _round(
    client: aiohttp.ClientSession, targets: dict[str, Target], cpu_of: dict[str, CpuReaders], light_n: int
) -> dict[str, Any]:
    row: dict[str, Any] = {}
    proxies = [n for n in targets if n != "direct"]
    everyone: CpuReaders = {f"{t}:{n}": read for t, readers in cpu_of.items() for n, read in readers.items()}
    waited = 0.0

    def chat(name: str, model: int) -> tuple[str, dict[str, str], dict[str, Any]]:
        url, headers, *models = targets[name]
        return f"{url}/v1/chat/completions", headers, chat_body(models[model])

    # 1. light load: each proxy with the provider called directly, taken request by request (a pass
    #    of its own, so that what one proxy leaves running weighs on its own figure only)
    row["light_added_ttft_ms"], direct_p50 = {}, []
    for name in proxies:
        waited += await _quiet(everyone)
        direct, through = await interleaved_streams(client, [chat("direct", 0), chat(name, 0)], light_n)
        row["light_added_ttft_ms"][name] = {q: _added(through, direct, q) for q in ("p50", "p99")}
        direct_p50.append(_p([r.ttft for r in direct], 50))
    row["light_direct_ttft_p50_ms"] = round(statistics.fmean(direct_p50), 2)
    # 2. 64 open paced streams; 3. 64 opened at once; 4. saturation — each target in turn
    open64: dict[str, list[StreamResult]] = {}
    burst: dict[str, list[StreamResult]] = {}
    rates: dict[str, float] = {}
    cpu: dict[str, dict[str, float]] = {}
    steady: dict[str, Any] = {"concurrency": 64, "total": 64 + 256, "ramp_s": PACED_STREAM_S, "warmup": 64}
    for name in targets:
        waited += await _quiet(everyone)
        open64[name], _ = await concurrent_streams(client, *chat(name, 1), **steady)
    for name in targets:
        waited += await _quiet(everyone)
        burst[name], _ = await concurrent_streams(client, *chat(name, 1), concurrency=64, total=64)
    for name in targets:
        waited += await _quiet(everyone)
        watch = cpu_of.get(name, {})
        before = {n: read() for n, read in watch.items()}
        infra = infrastructure_cpu_s()
        _, wall = await concurrent_streams(client, *chat(name, 0), concurrency=64, total=1024)
        rates[name] = round(1024 / wall, 1)
        if watch:
            spent = {n: (read() - before[n]) / 1024 * 1000 for n, read in watch.items()}
            if name == "switchboard":
                spent.update({n: s / 1024 * 1000 for n, s in infrastructure_spent(infra).items() if n != "redis"})
            cpu[name] = {n: round(v, 3) for n, v in spent.items()}
    row["open64_added_ttft_p99_ms"] = {n: _added(open64[n], open64["direct"], "p99") for n in proxies}
    row["open64_added_gap_p99_ms"] = {
        n: round(added_ms(_gaps(open64[n]), _gaps(open64["direct"]))["p99"], 2) for n in proxies
    }
    row["burst64_added_ttft_p99_ms"] = {n: _added(burst[n], burst["direct"], "p99") for n in proxies}
    row["burst64_direct_ttft_p99_ms"] = _p([r.ttft for r in burst["direct"]])
    row["saturation_streams_per_s"] = rates
    row["saturation_cpu_ms_per_stream"] = cpu
    row["waited_for_quiet_s"] = round(waited, 1)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    """The medians over ``rows``, as the issue's table (provider direct, Switchboard, LiteLLM)."""

    def med(*path: str) -> float:
        values = []
        for row in rows:
            value: Any = row
            for key in path:
                value = value[key]
            values.append(value)
        return statistics.median(values)

    def added(*path: str, digits: int = 1) -> str:
        return " | ".join(f"+{med(path[0], n, *path[1:]):,.{digits}f} ms" for n in ("switchboard", "litellm"))

    def pair(first: str, second: str) -> str:
        return " | ".join(f"+{med(first, n):,.1f} / +{med(second, n):,.1f} ms" for n in ("switchboard", "litellm"))

    rates = [med("saturation_streams_per_s", n) for n in ("direct", "switchboard", "litellm")]
    return "\n".join(
        [
            f"| figure (median of {len(rows)} rounds) | provider direct | Switchboard | LiteLLM |",
            "| --- | --- | --- | --- |",
            f"| light load, added TTFT p50 | {med('light_direct_ttft_p50_ms'):.2f} ms absolute | "
            f"{added('light_added_ttft_ms', 'p50', digits=2)} |",
            f"| 64 open streams, added TTFT p99 / gap p99 | — | "
            f"{pair('open64_added_ttft_p99_ms', 'open64_added_gap_p99_ms')} |",
            f"| 64 new streams at the same instant, added TTFT p99 | {med('burst64_direct_ttft_p99_ms'):.1f} ms "
            f"absolute | {added('burst64_added_ttft_p99_ms')} |",
            "| saturation, completed streams/s | " + " | ".join(f"{r:,.0f}" for r in rates) + " |",
            "",
            f"Switchboard's saturation throughput is {rates[1] / rates[2]:.1f}× LiteLLM's.",
        ]
    )


async def run(litellm: str, workers: int, rounds: int, light_n: int) -> list[dict[str, Any]]:
    async with bench_stack() as stack:
        fake = stack.fakellm_url
        assert fake is not None
        await script_models(fake)
        headers, agents = seed_bench_user(stack, (INSTANT, PACED))
        async with litellm_proxy(litellm, fake, workers) as (llm_url, llm_headers, llm_pid):
            targets: dict[str, Target] = {
                "direct": (fake, DIRECT_HEADERS, INSTANT, PACED),
                "switchboard": (stack.gateway_url, headers, agents[INSTANT], agents[PACED]),
                "litellm": (llm_url, llm_headers, INSTANT, PACED),
            }
            services = {n: p.pid for n, p in stack.processes.items() if n.split("-")[0] in SERVICES}
            cpu_of: dict[str, CpuReaders] = {
                "switchboard": {n: functools.partial(process_cpu_s, pid) for n, pid in services.items()},
                "litellm": {"litellm": functools.partial(_tree_cpu_s, llm_pid)},
            }
            async with make_client(80) as client:
                for url, h, instant, paced in targets.values():  # warm every path
                    await sequential_streams(client, f"{url}/v1/chat/completions", h, chat_body(instant), 20)
                    await concurrent_streams(
                        client, f"{url}/v1/chat/completions", h, chat_body(paced), concurrency=16, total=32
                    )
                rows = []
                for _ in range(rounds):
                    rows.append(await _round(client, targets, cpu_of, light_n))
                    print(json.dumps(rows[-1]), flush=True)
    print(_table(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--litellm", required=True, help="the litellm command of its own installation")
    parser.add_argument("--workers", type=int, default=1, help="LiteLLM's uvicorn workers (its default: 1)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--light", type=int, default=200, help="light-load streams per target a round")
    args = parser.parse_args()
    asyncio.run(run(args.litellm, args.workers, args.rounds, args.light))


if __name__ == "__main__":
    main()
