"""The whole stack against the fake LLM called directly, in the same run (issue figures 1–3, /v1/models).

Starts the product as real processes (devstack), scripts two models in its fake LLM — one instant, one
paced like a real model (~100 ms to the first token, then 50 tokens/s) — and measures the same
requests sent to the fake LLM directly and through the gateway. Every "added" figure is gateway minus
direct at the same percentile, measured minutes apart on the same machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from devstack.natsclean import clean_namespace
from devstack.procs import url_reachable
from devstack.seed import AdminClient
from devstack.stack import Stack, StackConfig

from .loadgen import (
    added_ms,
    complete_once,
    concurrent_completions,
    concurrent_streams,
    interleaved_streams,
    make_client,
    sequential_streams,
    summary_ms,
)

INSTANT = "bench-instant"
PACED = "bench-paced"
TEXT = " ".join(f"word{i}" for i in range(32))
#: One paced stream's length: 100 ms to the first token, then 32 tokens at 50 tokens/s.
PACED_STREAM_S = 0.1 + 32 / 50


def process_cpu_s(pid: int | None) -> float:
    """CPU time (user and system, seconds) a process has used so far (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


#: The shared servers whose CPU the saturation figure also reports, by process name (when they run on
#: this machine: the local servers, or the embedded ones the stack started).
INFRASTRUCTURE = {"nats": ("nats-server",), "postgres": ("postgres",), "redis": ("redis-server",)}


def infrastructure_cpu_s() -> dict[str, dict[int, float]]:
    """Each shared server's processes on this machine and the CPU time each has used so far."""
    found: dict[str, dict[int, float]] = {name: {} for name in INFRASTRUCTURE}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        for name, comms in INFRASTRUCTURE.items():
            if comm in comms:
                found[name][int(entry)] = process_cpu_s(int(entry))
    return found


def infrastructure_spent(before: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each shared server used since ``before`` (a process started since counts whole)."""
    after = infrastructure_cpu_s()
    return {
        name: sum(cpu - before[name].get(pid, 0.0) for pid, cpu in pids.items()) for name, pids in after.items() if pids
    }


async def _fresh_database(server_url: str) -> tuple[str, str]:
    import asyncpg

    name = f"sbbench_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return urlparse(server_url)._replace(path=f"/{name}").geturl(), name


async def _drop_database(server_url: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _infra() -> dict[str, Any]:
    """Use the local NATS / PostgreSQL / Redis when they answer (as in production), else embedded defaults."""
    nats = os.environ.get("NATS_URL", "nats://127.0.0.1:4222")
    pg = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    redis = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    return {
        "nats": nats if url_reachable(nats, 4222) else None,
        "postgres": pg if url_reachable(pg, 5432) else None,
        "redis": redis if url_reachable(redis, 6379) else None,
    }


@contextlib.asynccontextmanager
async def bench_stack(runners: int = 1, service_env: dict[str, dict[str, str]] | None = None) -> AsyncIterator[Stack]:
    """A whole stack on the machine's NATS/PostgreSQL/Redis when they answer (a fresh database, its own
    namespace), removed afterwards; ``service_env`` adds to the defaults per service."""
    infra = _infra()
    db_url = db_name = None
    if infra["postgres"]:
        db_url, db_name = await _fresh_database(infra["postgres"])
    run_dir = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    per_service: dict[str, dict[str, str]] = {"runner": {"RUNNER_CONCURRENCY": "128", "RUNNER_HEARTBEAT_S": "5"}}
    for service, extra in (service_env or {}).items():
        per_service[service] = {**per_service.get(service, {}), **extra}
    config = StackConfig(
        run_dir=run_dir,
        namespace=f"bench{secrets.token_hex(3)}",
        nats_url=infra["nats"],
        catalog_database_url=db_url,
        billing_database_url=db_url,
        redis_url=infra["redis"],
        env={"LOG_LEVEL": "WARNING"},
        service_env=per_service,
        runners=runners,
    )
    stack = Stack(config)
    await asyncio.to_thread(stack.start)
    try:
        yield stack
    finally:
        await asyncio.to_thread(stack.stop)
        if db_name and infra["postgres"]:
            await _drop_database(infra["postgres"], db_name)
        if infra["nats"]:
            await clean_namespace(infra["nats"], config.namespace)


#: The fake LLM called directly, with the headers every OpenAI client sends (a JSON body says so: the
#: gateway answers 415 otherwise).
DIRECT_HEADERS = {"Authorization": "Bearer sk-fake", "Content-Type": "application/json"}


def seed_bench_user(stack: Stack, models: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """A user with credits to spare and no rate limit to speak of, an agent per fake-LLM model: the
    headers of its API key and the agent id of each model."""
    with AdminClient(stack.gateway_url, stack.admin_token) as admin:
        user = admin.create_user("bench")
        admin.add_credits(user["id"], 10**12)
        key = admin.create_api_key(user["id"], "bench", rate_limit_per_minute=10**8)["key"]
        agents = {m: admin.create_agent(name=m, provider="openai", model=m, owner_id=user["id"])["id"] for m in models}
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}, agents


async def script_models(fake_url: str | None) -> None:
    """Script the bench's two models in the fake LLM: ``INSTANT`` (no delay) and ``PACED`` (100 ms to the
    first token, then 50 tokens/s), each answering ``TEXT``."""
    assert fake_url is not None, "a bench stack runs the fake LLM"
    async with httpx.AsyncClient() as h:
        for model, ttft_ms, rate in ((INSTANT, 0, 0), (PACED, 100, 50)):
            script = {"turns": [{"text": TEXT, "ttft_ms": ttft_ms, "tokens_per_s": rate}]}
            await h.put(f"{fake_url}/_fake/scripts/{model}", json=script)


def chat_body(model: str, stream: bool = True) -> dict[str, Any]:
    """The bench's chat completion request."""
    return {"model": model, "messages": [{"role": "user", "content": "Say thirty-two words."}], "stream": stream}


def responses_body(model: str) -> dict[str, Any]:
    return {"model": model, "input": "Say thirty-two words.", "stream": True, "store": False}


async def run(quick: bool = False) -> dict[str, Any]:
    async with bench_stack() as stack:
        return await _measure(stack, _infra(), quick)


async def _measure(stack: Stack, infra: dict[str, Any], quick: bool) -> dict[str, Any]:
    fake = stack.fakellm_url
    await script_models(fake)
    gw_h, agents = seed_bench_user(stack, (INSTANT, PACED))
    direct_url, gw_url = f"{fake}/v1/chat/completions", f"{stack.gateway_url}/v1/chat/completions"

    gw_responses_url = f"{stack.gateway_url}/v1/responses"

    n_light = 60 if quick else 400
    n_paced = 64 if quick else 256
    n_sat = 128 if quick else 1024
    results: dict[str, Any] = {"infra": {k: bool(v) for k, v in infra.items()}}
    async with make_client(80) as client:
        # warm every path (connections, caches, JIT-less imports, the runner's fetch loop)
        for _ in range(20):
            await sequential_streams(client, direct_url, DIRECT_HEADERS, chat_body(INSTANT), 1)
            await sequential_streams(client, gw_url, gw_h, chat_body(agents[INSTANT]), 1)
            await sequential_streams(client, gw_responses_url, gw_h, responses_body(agents[INSTANT]), 1)

        # 1. light load: one at a time, instant model: the provider called directly (the baseline of
        #    both routes: the runner calls its chat route), chat completions and /v1/responses, taken in
        #    turn request by request, so that the machine's load at any moment weighs on all three alike
        direct, through, responses = await interleaved_streams(
            client,
            [
                (direct_url, DIRECT_HEADERS, chat_body(INSTANT)),
                (gw_url, gw_h, chat_body(agents[INSTANT])),
                (gw_responses_url, gw_h, responses_body(agents[INSTANT])),
            ],
            n_light,
        )
        d, g, r = [x.ttft for x in direct], [x.ttft for x in through], [x.ttft for x in responses]
        results["light"] = {
            "requests": n_light,
            "direct_ttft_ms": summary_ms(d),
            "gateway_ttft_ms": summary_ms(g),
            "added_ttft_ms": added_ms(g, d),
        }
        results["light_responses"] = {
            "requests": n_light,
            "gateway_ttft_ms": summary_ms(r),
            "added_ttft_ms": added_ms(r, d),
        }

        # 1b. CPU per stream of every service on each route (light load; each route's streams in two
        #     halves, taken in turn): each process's CPU time over the streams, per 1,000 streams
        services = {
            name: p.pid
            for name, p in stack.processes.items()
            if name.split("-")[0] in ("gateway", "runner", "billing", "catalog")
        }
        results["processes"] = {
            kind: sum(1 for n in services if n.split("-")[0] == kind)
            for kind in ("gateway", "runner", "billing", "catalog")
        }
        cpu: dict[str, dict[str, float]] = {"light_chat": {}, "light_responses": {}}
        routes = {
            "light_chat": (gw_url, gw_h, chat_body(agents[INSTANT])),
            "light_responses": (gw_responses_url, gw_h, responses_body(agents[INSTANT])),
        }
        for _ in range(2):
            for route, (url, headers, route_body) in routes.items():
                before = {name: process_cpu_s(pid) for name, pid in services.items()}
                await sequential_streams(client, url, headers, route_body, n_light // 2)
                await asyncio.sleep(0.2)  # what a stream leaves to do once its client has the answer
                for name, pid in services.items():
                    spent = (process_cpu_s(pid) - before[name]) / (2 * (n_light // 2)) * 1000
                    cpu[route][name] = cpu[route].get(name, 0.0) + spent
        results["cpu_s_per_1000_streams"] = cpu

        # 2. realistic load: 64 concurrent paced streams. As with real traffic, streams start at
        #    different moments: the 64 workers' first requests are spread over one stream's length
        #    (the ramp, not reported), after which 64 streams stay open, each replaced as it ends.
        steady: dict[str, Any] = {"concurrency": 64, "total": 64 + n_paced, "ramp_s": PACED_STREAM_S, "warmup": 64}
        direct, _ = await concurrent_streams(client, direct_url, DIRECT_HEADERS, chat_body(PACED), **steady)
        through, _ = await concurrent_streams(client, gw_url, gw_h, chat_body(agents[PACED]), **steady)
        d, g = [r.ttft for r in direct], [r.ttft for r in through]
        dg = [x for r in direct for x in r.gaps]
        gg = [x for r in through for x in r.gaps]
        results["realistic"] = {
            "streams": n_paced,
            "concurrency": 64,
            "ramp_s": PACED_STREAM_S,
            "direct_ttft_ms": summary_ms(d),
            "gateway_ttft_ms": summary_ms(g),
            "added_ttft_ms": added_ms(g, d),
            "direct_gap_ms": summary_ms(dg),
            "gateway_gap_ms": summary_ms(gg),
            "added_gap_p99_ms": added_ms(gg, dg)["p99"],
        }

        # 2b. the worst case of the same load: 64 paced streams opened at the same instant
        direct, _ = await concurrent_streams(
            client, direct_url, DIRECT_HEADERS, chat_body(PACED), concurrency=64, total=64
        )
        through, _ = await concurrent_streams(client, gw_url, gw_h, chat_body(agents[PACED]), concurrency=64, total=64)
        d, g = [r.ttft for r in direct], [r.ttft for r in through]
        results["realistic_burst"] = {
            "streams": 64,
            "direct_ttft_ms": summary_ms(d),
            "gateway_ttft_ms": summary_ms(g),
            "added_ttft_ms": added_ms(g, d),
        }

        # 3. saturation: instant model, 64 concurrent
        _, d_wall = await concurrent_streams(
            client, direct_url, DIRECT_HEADERS, chat_body(INSTANT), concurrency=64, total=n_sat
        )
        before = {name: process_cpu_s(pid) for name, pid in services.items()}
        infra_before = infrastructure_cpu_s()
        loadgen_before = process_cpu_s(os.getpid())
        fake_pid = stack.processes["fakellm"].pid if "fakellm" in stack.processes else None
        fake_before = process_cpu_s(fake_pid)
        _, g_wall = await concurrent_streams(
            client, gw_url, gw_h, chat_body(agents[INSTANT]), concurrency=64, total=n_sat
        )
        cpu["saturation_chat"] = {
            name: (process_cpu_s(pid) - before[name]) / n_sat * 1000 for name, pid in services.items()
        }
        # Where the rest of the machine's CPU went: the shared servers, the fake LLM, the load generator.
        cpu["saturation_chat_infrastructure"] = {
            **{name: spent / n_sat * 1000 for name, spent in infrastructure_spent(infra_before).items()},
            "fakellm": (process_cpu_s(fake_pid) - fake_before) / n_sat * 1000,
            "loadgen": (process_cpu_s(os.getpid()) - loadgen_before) / n_sat * 1000,
        }
        d_nwall = await concurrent_completions(
            client, direct_url, DIRECT_HEADERS, chat_body(INSTANT, False), concurrency=64, total=n_sat
        )
        g_nwall = await concurrent_completions(
            client, gw_url, gw_h, chat_body(agents[INSTANT], False), concurrency=64, total=n_sat
        )
        results["saturation"] = {
            "requests": n_sat,
            "concurrency": 64,
            "direct_streams_per_s": n_sat / d_wall,
            "gateway_streams_per_s": n_sat / g_wall,
            "streams_fraction_of_direct": d_wall / g_wall,
            "direct_requests_per_s": n_sat / d_nwall,
            "gateway_requests_per_s": n_sat / g_nwall,
            "requests_fraction_of_direct": d_nwall / g_nwall,
        }

        # /v1/models latency, and a cached request's auth + permission check (measured in-process below)
        times = []
        for _ in range(n_light):
            start = time.perf_counter()
            async with client.get(f"{stack.gateway_url}/v1/models", headers=gw_h) as resp:
                await resp.read()
            times.append(time.perf_counter() - start)
            assert resp.status == 200
        results["models"] = {"requests": n_light, "latency_ms": summary_ms(times)}
        # a trivial whole request to both, as a sanity line
        results["sanity_ms"] = {
            "direct_whole": await complete_once(client, direct_url, DIRECT_HEADERS, chat_body(INSTANT, False)) * 1000,
            "gateway_whole": await complete_once(client, gw_url, gw_h, chat_body(agents[INSTANT], False)) * 1000,
        }
    return results
