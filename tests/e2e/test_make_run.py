"""``python -m devstack run`` (what ``make run`` starts): embedded defaults, a seeded demo, a working
printed example, and Ctrl-C stops everything with exit code 0."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest

from devstack.procs import free_port

pytestmark = pytest.mark.e2e

#: Variables that would point ``make run`` away from its embedded defaults.
_NOT_INHERITED = ("NATS_URL", "DATABASE_URL", "TEST_DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "DEMO_MODEL")


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        out.append(line)
        if marker in line:
            return "".join(out)
    raise AssertionError(f"no {marker!r} within {timeout}s; output:\n{''.join(out)}")


async def _load(base_url: str, key: str, agent: str, clients: int, each: int) -> Counter[int]:
    """``clients`` clients, each sending ``each`` requests back to back; the count of each status."""
    statuses: Counter[int] = Counter()
    async with httpx.AsyncClient(
        base_url=base_url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
        limits=httpx.Limits(max_connections=clients),
    ) as http:

        async def client() -> None:
            for _ in range(each):
                body = {"model": agent, "messages": [{"role": "user", "content": "Hi!"}]}
                statuses[(await http.post("/chat/completions", json=body)).status_code] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def test_devstack_run_prints_a_working_example_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _NOT_INHERITED and not k.startswith(("OPENAI_", "ANTHROPIC_", "BILLING_", "GATEWAY_", "RUNNER_"))
    }
    env["GATEWAY_PORT"] = str(port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "run", "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        banner = _read_until(proc, "Press Ctrl-C to stop.", timeout=90)
        key = re.search(r"Demo API key\s+(\S+)", banner)
        agent = re.search(r"Demo agent \(model\)\s+(\S+)", banner)
        assert key and agent, banner
        assert f"http://127.0.0.1:{port}/v1" in banner
        assert "curl -N" in banner and "from openai import OpenAI" in banner

        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1), max_retries=0, timeout=30
        ) as client:
            stream = client.chat.completions.create(
                model=agent.group(1), messages=[{"role": "user", "content": "Hello!"}], stream=True
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert "Hello!" in text  # the fake LLM echoes an unscripted prompt
        assert (tmp_path / "run" / "logs" / "gateway.log").exists()
        # One engine everywhere: the data is in an embedded PostgreSQL, and no database file lies beside it.
        pgdata = tmp_path / "run" / "postgres" / "pgdata"
        assert (pgdata / "PG_VERSION").exists() and (pgdata / "postmaster.pid").exists()
        assert not list((tmp_path / "run").rglob("*.db"))
        # A first load test: 64 clients sending back to back see no 5xx.
        statuses = asyncio.run(_load(f"http://127.0.0.1:{port}/v1", key.group(1), agent.group(1), 64, 4))
        assert statuses == {200: 64 * 4}, statuses

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
        assert not (pgdata / "postmaster.pid").exists(), "PostgreSQL still runs after Ctrl-C"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the gateway still listens after Ctrl-C"
