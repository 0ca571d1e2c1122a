"""``python -m devstack run`` (what ``make run`` starts): embedded defaults, a seeded demo, a working
printed example, a service that dies is restarted (and says so), and Ctrl-C stops everything with exit
code 0."""

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


class Output:
    """The lines a process prints, read by one thread of its own, waited for by marker."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._proc = proc
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def until(self, marker: str, timeout: float) -> str:
        """The lines up to the first one holding ``marker``; fails after ``timeout``."""
        out: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
            if marker in line:
                return "".join(out)
        raise AssertionError(f"no {marker!r} within {timeout}s; output:\n{''.join(out)}")


def _read_until(proc: subprocess.Popen[str], marker: str, timeout: float) -> str:
    return Output(proc).until(marker, timeout)


def _run_env(port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _NOT_INHERITED and not k.startswith(("OPENAI_", "ANTHROPIC_", "BILLING_", "GATEWAY_", "RUNNER_"))
    }
    env["GATEWAY_PORT"] = str(port)
    return env


def _children(pid: int) -> dict[int, list[str]]:
    """The processes whose parent is ``pid``, with their command lines (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = [part.decode(errors="replace") for part in cmdline if part]
    return found


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
    env = _run_env(port)
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


def test_devstack_run_restarts_a_service_that_dies(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "run", "--run-dir", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_run_env(port),
        start_new_session=True,
    )
    try:
        output = Output(proc)
        banner = output.until("Press Ctrl-C to stop.", timeout=90)
        key = re.search(r"Demo API key\s+(\S+)", banner)
        agent = re.search(r"Demo agent \(model\)\s+(\S+)", banner)
        assert key and agent, banner
        [runner] = [pid for pid, argv in _children(proc.pid).items() if argv[1:3] == ["-m", "runner"]]

        os.kill(runner, signal.SIGKILL)
        news = output.until("runner-0 restarted", timeout=30)
        assert "runner-0 exited unexpectedly (code -9)" in news, news
        assert proc.poll() is None  # the stack goes on

        # The restarted runner serves (a 503 is fine until its first heartbeat is heard).
        deadline = time.monotonic() + 30
        with openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=key.group(1), max_retries=0, timeout=30
        ) as client:
            while True:
                try:
                    completion = client.chat.completions.create(
                        model=agent.group(1), messages=[{"role": "user", "content": "Hello again!"}]
                    )
                    break
                except (openai.APIStatusError, openai.APIConnectionError):
                    assert time.monotonic() < deadline, "the restarted runner never answered"
                    time.sleep(0.2)
        assert "Hello again!" in (completion.choices[0].message.content or "")

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
