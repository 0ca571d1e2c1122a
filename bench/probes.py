"""Two focused probes, for comparing one change with another in the same minutes (the full stack bench
takes several, and this machine's speed drifts between them).

``python -m bench.probes saturation [--rounds N]``: rounds of 1,024 streams, 64 at a time, of the instant
model through the gateway (one runner): streams/s, content deltas per stream, time to first token and
each process's CPU per stream — the services and the shared servers (NATS, PostgreSQL, Redis).

``python -m bench.probes light [--rounds N]``: rounds of 200 streams of the instant model one at a time,
straight to the fake LLM, through chat completions and through ``/v1/responses`` taken in turn: the
added time to first token of each route (p50, p99).

``python -m bench.probes tokens [--rounds N] [--streams C]``: rounds of C streams (500) of the capacity
bench's paced model (20 tokens/s) kept open for 10 s, straight to the fake LLM and through the gateway
(two runners): relayed tokens/s, the inter-token gap p99 and each process's CPU per relayed token.

``python -m bench.probes burst [--rounds N]``: rounds of 64 streams of the paced model opened at the
same instant, straight to the fake LLM and then through the gateway: the first round meets a cold
gateway (no runs admitted ahead yet), the later ones a warm one.

``python -m bench.probes timeline [--rounds N]``: rounds of 200 streams of the instant model one at a
time through chat completions, with the gateway and the runner marking each step of the way to the
first token (:mod:`bench.timeline`): the median time of each step, in µs, and what a mark costs.

``--runners N`` runs N runner processes (each probe's default is above); ``--env`` sets a service's setting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from devstack.stack import Stack

from . import timeline
from .capacity_bench import RATE_MODEL, rate, rate_body, script_rate_model
from .loadgen import (
    StreamResult,
    added_ms,
    concurrent_streams,
    interleaved_streams,
    make_client,
    percentile,
    sequential_streams,
    stream_once,
    summary_ms,
)
from .stack_bench import (
    DIRECT_HEADERS,
    INSTANT,
    PACED,
    bench_stack,
    chat_body,
    infrastructure_cpu_s,
    infrastructure_spent,
    process_cpu_s,
    responses_body,
    script_models,
    seed_bench_user,
)

SERVICES = ("gateway", "runner", "billing")
ROOT = Path(__file__).resolve().parent.parent
HOOK = ROOT / "bench" / "timeline_hook"


def _ms(values: list[float]) -> dict[str, float]:
    return {q: round(v, 1) for q, v in summary_ms(values).items()}


@contextlib.asynccontextmanager
async def _stack(
    env: dict[str, dict[str, str]], model: str, runners: int
) -> AsyncIterator[tuple[Stack, dict[str, str], dict[str, str]]]:
    """A bench stack with the fake LLM's models scripted, and a user's headers and agent for ``model``."""
    async with bench_stack(runners=runners, service_env=env) as stack:
        await script_models(stack.fakellm_url)
        headers, agents = seed_bench_user(stack, (model,))
        yield stack, headers, agents


Row = dict[str, Any]


async def _rounds(rounds: int, measure: Callable[[], Awaitable[Row]]) -> list[Row]:
    """``measure`` once a round; each round's row printed as it comes (JSON, one line) and returned."""
    out = []
    for _ in range(rounds):
        out.append(await measure())
        print(json.dumps(out[-1]), flush=True)
    return out


def _added(through: list[StreamResult], direct: list[StreamResult]) -> dict[str, float]:
    return {q: round(v, 2) for q, v in added_ms([r.ttft for r in through], [r.ttft for r in direct]).items()}


async def saturation(rounds: int, env: dict[str, dict[str, str]], runners: int = 1) -> list[Row]:
    async with _stack(env, INSTANT, runners) as (stack, headers, agents):
        url, body = f"{stack.gateway_url}/v1/chat/completions", chat_body(agents[INSTANT])
        pids = {n: p.pid for n, p in stack.processes.items() if n.split("-")[0] in SERVICES}
        async with make_client(80) as client:
            await concurrent_streams(client, url, headers, body, concurrency=64, total=256)  # warm

            async def measure() -> Row:
                before, infra = {n: process_cpu_s(p) for n, p in pids.items()}, infrastructure_cpu_s()
                results, wall = await concurrent_streams(client, url, headers, body, concurrency=64, total=1024)
                cpu = {n: (process_cpu_s(p) - before[n]) / 1024 * 1000 for n, p in pids.items()}
                cpu.update({n: spent / 1024 * 1000 for n, spent in infrastructure_spent(infra).items()})
                return {
                    "streams_per_s": round(1024 / wall, 1),
                    "deltas_per_stream": round(statistics.fmean(len(r.gaps) + 1 for r in results), 1),
                    "ttft_ms": _ms([r.ttft for r in results]),
                    "cpu_ms_per_stream": {n: round(v, 3) for n, v in cpu.items()},
                }

            return await _rounds(rounds, measure)


async def burst(rounds: int, env: dict[str, dict[str, str]], runners: int = 1) -> list[Row]:
    async with _stack(env, PACED, runners) as (stack, headers, agents):
        direct_url, url = f"{stack.fakellm_url}/v1/chat/completions", f"{stack.gateway_url}/v1/chat/completions"
        async with make_client(80) as client:

            async def measure() -> Row:
                at_once = {"concurrency": 64, "total": 64}
                direct, _ = await concurrent_streams(client, direct_url, DIRECT_HEADERS, chat_body(PACED), **at_once)
                through, _ = await concurrent_streams(client, url, headers, chat_body(agents[PACED]), **at_once)
                d, g = [r.ttft for r in direct], [r.ttft for r in through]
                return {
                    "direct_ttft_ms": _ms(d),
                    "gateway_ttft_ms": _ms(g),
                    "added_p99_ms": _added(through, direct)["p99"],
                }

            return await _rounds(rounds, measure)


async def light(rounds: int, env: dict[str, dict[str, str]], runners: int = 1) -> list[Row]:
    async with _stack(env, INSTANT, runners) as (stack, headers, agents):
        targets = [
            (f"{stack.fakellm_url}/v1/chat/completions", DIRECT_HEADERS, chat_body(INSTANT)),
            (f"{stack.gateway_url}/v1/chat/completions", headers, chat_body(agents[INSTANT])),
            (f"{stack.gateway_url}/v1/responses", headers, responses_body(agents[INSTANT])),
        ]
        async with make_client(8) as client:
            for url, h, body in targets * 20:  # warm every path
                await sequential_streams(client, url, h, body, 1)

            async def measure() -> Row:
                direct, chat, responses = await interleaved_streams(client, targets, 200)
                return {
                    "direct_p50_ms": round(percentile([r.ttft for r in direct], 50) * 1000, 2),
                    "chat_added_ms": _added(chat, direct),
                    "responses_added_ms": _added(responses, direct),
                }

            return await _rounds(rounds, measure)


async def timeline_probe(rounds: int, env: dict[str, dict[str, str]], runners: int = 1) -> list[Row]:
    with tempfile.TemporaryDirectory(prefix="switchboard-timeline-") as tmp:
        return await _timeline(rounds, env, runners, Path(tmp))


async def _timeline(rounds: int, env: dict[str, dict[str, str]], runners: int, tmp: Path) -> list[Row]:
    folder = tmp / "marks"
    folder.mkdir()
    hook = {"PYTHONPATH": f"{HOOK}{os.pathsep}{ROOT}", timeline.ENV: str(folder)}
    env = {**env, **{service: {**hook, **env.get(service, {})} for service in ("gateway", "runner")}}
    os.environ[timeline.ENV] = str(folder)  # for mark() here, the client's own marks
    timeline.install()
    cost = timeline.mark_cost_us(tmp)
    async with _stack(env, INSTANT, runners) as (stack, headers, agents):
        url, body = f"{stack.gateway_url}/v1/chat/completions", chat_body(agents[INSTANT])
        direct_url, direct_body = f"{stack.fakellm_url}/v1/chat/completions", chat_body(INSTANT)
        async with make_client(8) as client:
            await sequential_streams(client, url, headers, body, 20)  # warm the path

            async def measure() -> Row:
                for file in folder.glob("*.log"):
                    file.write_bytes(b"")
                ttft, direct = [], []
                for _ in range(200):
                    direct.append(await stream_once(client, direct_url, DIRECT_HEADERS, direct_body))
                    sent_ns, sent = time.time_ns(), time.perf_counter()
                    timeline.mark(timeline.CLIENT_START, sent_ns)
                    result = await stream_once(client, url, headers, body)
                    timeline.mark(timeline.CLIENT_FIRST, sent_ns + round((result.start + result.ttft - sent) * 1e9))
                    ttft.append(result.ttft)
                durations, complete = timeline.steps(timeline.read(folder))
                return {
                    "direct_p50_ms": round(percentile([r.ttft for r in direct], 50) * 1000, 2),
                    "ttft_p50_ms": round(percentile(ttft, 50) * 1000, 2),
                    "requests_with_every_step": complete,
                    "mark_cost_us": round(cost, 1),
                    "steps_us": durations,
                }

            return await _rounds(rounds, measure)


async def tokens(rounds: int, env: dict[str, dict[str, str]], runners: int = 2, streams: int = 500) -> list[Row]:
    env = {**env, "runner": {"RUNNER_CONCURRENCY": str(streams), **env.get("runner", {})}}
    async with bench_stack(runners=runners, service_env=env) as stack:
        fake = stack.fakellm_url
        await script_rate_model(fake)
        headers, agents = seed_bench_user(stack, (RATE_MODEL,))
        procs = stack.processes
        fakellm = {"fakellm": procs["fakellm"].pid}
        through = {n: p.pid for n, p in procs.items() if n.split("-")[0] in (*SERVICES, "fakellm")}
        targets = (
            ("direct", f"{fake}/v1/chat/completions", DIRECT_HEADERS, rate_body(RATE_MODEL), fakellm),
            ("gateway", f"{stack.gateway_url}/v1/chat/completions", headers, rate_body(agents[RATE_MODEL]), through),
        )
        async with make_client(streams + 16, total_timeout_s=None) as client:

            async def measure() -> Row:
                row: Row = {}
                for side, url, h, body, watch in targets:
                    got = await rate(client, url, h, body, concurrency=streams, duration_s=10.0, watch=watch)
                    row[side] = {
                        "tokens_per_s": round(got["relayed_tokens_per_s"]),
                        "gap_p99_ms": round(got["gap_p99_ms"], 1),
                        "cpu_us_per_token": {n: round(v, 1) for n, v in got["cpu_us_per_token"].items()},
                    }
                return row

            return await _rounds(rounds, measure)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.probes", description=__doc__)
    parser.add_argument("probe", choices=["saturation", "burst", "light", "tokens", "timeline"])
    parser.add_argument("--streams", type=int, default=500, help="tokens: streams kept open")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runners", type=int, help="runner processes (default: 1; tokens: 2)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="SERVICE:NAME=VALUE",
        help="a setting for one service (gateway, runner, billing, catalog), e.g. gateway:GATEWAY_PREADMIT_RUNS=8",
    )
    args = parser.parse_args()
    env: dict[str, dict[str, str]] = {}
    for item in args.env:
        service, _, setting = item.partition(":")
        name, _, value = setting.partition("=")
        env.setdefault(service, {})[name] = value
    runners = {"runners": args.runners} if args.runners else {}
    if args.probe == "tokens":
        asyncio.run(tokens(args.rounds, env, streams=args.streams, **runners))
    else:
        probes = {"saturation": saturation, "burst": burst, "light": light, "timeline": timeline_probe}
        asyncio.run(probes[args.probe](args.rounds, env, **runners))


if __name__ == "__main__":
    main()
