"""``python -m devstack run`` (what ``make run`` starts): embedded defaults, a seeded demo, a working
printed example, a service that dies is restarted (and says so), and Ctrl-C stops everything with exit
code 0. The printed example runs as pasted, the demo agent shows the agent loop (the calculator called
and its result in the answer), and the admin token and demo key are kept across restarts."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import shlex
import signal
import socket
import stat
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
from devstack.seed import AdminClient
from tests.e2e.checks import run_ledger

pytestmark = pytest.mark.e2e

#: Variables that would point ``make run`` away from its embedded defaults.
_NOT_INHERITED = ("NATS_URL", "DATABASE_URL", "TEST_DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "DEMO_MODEL")
_EXPORTED = ("SWITCHBOARD_API_KEY", "SWITCHBOARD_AGENT", "SWITCHBOARD_BASE_URL", "ADMIN_TOKEN")


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
        if k not in _NOT_INHERITED
        and k not in _EXPORTED
        and not k.startswith(("OPENAI_", "ANTHROPIC_", "BILLING_", "GATEWAY_", "RUNNER_"))
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
        # Each service's health port is in the banner, and answers /metrics there.
        billing = re.search(r"^\s+billing\s+(http://127\.0\.0\.1:\d+)$", banner, re.MULTILINE)
        assert billing, banner
        assert httpx.get(f"{billing.group(1)}/metrics", timeout=5).status_code == 200

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


def _start_run(run_dir: Path, port: int) -> tuple[subprocess.Popen[str], Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "devstack", "run", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_run_env(port),
        start_new_session=True,
    )
    return proc, Output(proc)


def _stop_run(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _exports(banner: str) -> dict[str, str]:
    """The ``export NAME=value`` lines of the banner, as a shell would read them."""
    found = {}
    for line in banner.splitlines():
        if line.startswith("export "):
            for word in shlex.split(line)[1:]:
                name, _, value = word.partition("=")
                found[name] = value
    return found


def _between(banner: str, start: str, end: str) -> str:
    """The printed lines after the line holding ``start`` and before the line holding ``end``."""
    lines = banner.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if start in line)
    last = next(i for i, line in enumerate(lines) if i > first and end in line)
    return "".join(lines[first + 1 : last])


def _shell(script: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``script`` pasted into a fresh shell that has none of the printed variables yet."""
    env = {k: v for k, v in _run_env(0).items() if k != "GATEWAY_PORT"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=timeout)


def _api_keys(gateway: str, admin_token: str, user_id: str) -> list[str]:
    """The ids of the user's API keys (the admin token is checked by the same call)."""
    with AdminClient(gateway, admin_token) as admin:
        return sorted(str(k["id"]) for k in admin.iterate(f"/users/{user_id}/api-keys"))


def test_devstack_run_examples_run_as_pasted_demo_calls_its_tools_and_credentials_are_kept(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    port = free_port()
    gateway = f"http://127.0.0.1:{port}"
    proc, output = _start_run(run_dir, port)
    try:
        banner = output.until("Press Ctrl-C to stop.", timeout=90)
        exported = _exports(banner)
        assert set(exported) == set(_EXPORTED), banner
        assert exported["SWITCHBOARD_BASE_URL"] == f"{gateway}/v1"
        user_id = re.search(r"Demo user\s+(\S+)", banner)
        assert user_id, banner
        export_lines = "".join(line + "\n" for line in banner.splitlines() if line.startswith("export "))

        # The variables are kept in <run dir>/env, readable by the owner only.
        env_file = run_dir / "env"
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
        sourced = _shell(f"source {shlex.quote(str(env_file))} && env")
        assert all(f"{k}={v}" in sourced.stdout.splitlines() for k, v in exported.items()), sourced

        # The Python example, pasted as printed into the virtualenv's Python after the export lines.
        example = _between(banner, "Or with the openai Python SDK", "The same example is in")
        assert example.strip() and not example.lstrip("\n").startswith(" "), example
        assert example.strip() == (run_dir / "example.py").read_text().strip()
        pasted = _shell(f"{export_lines}{shlex.quote(sys.executable)} - <<'EOF'\n{example}EOF\n")
        assert pasted.returncode == 0, pasted
        assert "391" in pasted.stdout, pasted
        # The command printed to run the written example, as printed (it names the interpreter).
        [command] = [line for line in _between(banner, "run it with:", "demo agent").splitlines() if line.strip()]
        assert command.endswith("example.py") and not command.startswith(("python", "python3")), command
        ran = _shell(f"{export_lines}{command}")
        assert ran.returncode == 0, ran
        assert "17*23 = 391" in ran.stdout, ran
        # The printed curl example, as printed.
        curl = _between(banner, "Stream an answer with curl:", "Or with the openai Python SDK")
        streamed = _shell(f"{export_lines}{curl}")
        assert streamed.returncode == 0 and "Hello!" in streamed.stdout and "[DONE]" in streamed.stdout, streamed

        # The README's Python examples ("A first request"), all of them in order, as pasted.
        readme = _readme_python_examples()
        ran = _shell(f"{export_lines}{shlex.quote(sys.executable)} - <<'EOF'\n{readme}EOF\n")
        assert ran.returncode == 0, ran
        assert "17*23 = 391" in ran.stdout, ran  # the streamed chat answer
        assert "You said: What is my name?" in ran.stdout, ran  # the continued response
        assert "The get_weather tool answered: sunny, 24 °C." in ran.stdout, ran  # the client's function

        # The demo agent shows the agent loop: the fake LLM calls the calculator, the runner executes it
        # (two model calls billed for the run), and the answer holds its result.
        with openai.OpenAI(
            base_url=exported["SWITCHBOARD_BASE_URL"],
            api_key=exported["SWITCHBOARD_API_KEY"],
            max_retries=0,
            timeout=30,
        ) as client:
            completion = client.chat.completions.create(
                model=exported["SWITCHBOARD_AGENT"], messages=[{"role": "user", "content": "What is 17*23?"}]
            )
        message = completion.choices[0].message
        assert "391" in (message.content or ""), message
        assert not message.tool_calls, message  # the agent's own call is activity, not the client's
        assert [c["name"] for c in (message.model_extra or {})["agent_tool_calls"]] == ["calculator"], message
        with AdminClient(gateway, exported["ADMIN_TOKEN"]) as admin:
            calls = asyncio.run(run_ledger(admin, user_id.group(1), completion.id, calls=2))
        assert sorted(e["call_index"] for e in calls) == [0, 1], calls
        keys_before = _api_keys(gateway, exported["ADMIN_TOKEN"], user_id.group(1))
    finally:
        _stop_run(proc)
    assert proc.returncode == 0

    # Started again on the same run directory: the same admin token and demo key, no new key.
    proc, output = _start_run(run_dir, port)
    try:
        again = output.until("Press Ctrl-C to stop.", timeout=90)
        assert _exports(again) == exported, again
        assert "kept from" in again, again
        assert _api_keys(gateway, exported["ADMIN_TOKEN"], user_id.group(1)) == keys_before
        with openai.OpenAI(
            base_url=exported["SWITCHBOARD_BASE_URL"],
            api_key=exported["SWITCHBOARD_API_KEY"],
            max_retries=0,
            timeout=30,
        ) as client:
            answer = client.chat.completions.create(
                model=exported["SWITCHBOARD_AGENT"], messages=[{"role": "user", "content": "Hello again!"}]
            )
        assert "Hello again!" in (answer.choices[0].message.content or "")
    finally:
        _stop_run(proc)
    assert proc.returncode == 0


def _readme_python_examples() -> str:
    """The Python blocks of the README's "A first request" section, joined in order."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## A first request", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) >= 3, "the README's first-request examples"
    return "\n".join(blocks)
