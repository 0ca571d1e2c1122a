"""Each image's environment, built alone as its Dockerfile builds it, starts, gets ready and stops cleanly.

Why this exists: the development environment holds every package at once, so a module that one
package imports but only another declares works in every other test and fails only in the image
(billing's ``health.py`` imported ``orjson``, which only the gateway and the runner declared: the
billing image could not start). ``tests/unit/deploy/test_declared_dependencies.py`` compares imports
with declarations statically; this test checks the result the way production meets it.

No Docker engine is needed. For each image (the four services and the fake LLM) the build stage of its
Dockerfile is carried out step by step (:mod:`tests.support.images`). Then the runtime stage's ``CMD`` runs with its
``ENV`` and compose's variables for the service, pointed at this machine's NATS (a namespace of its
own), PostgreSQL (a fresh database per service) and Redis, in compose's start order. Each must answer
200 on the path of its compose health check, then end cleanly on SIGTERM.

Differences from compose, none of which changes what gets installed or how it starts (those of the
build: see :mod:`tests.support.images`): the processes listen on 127.0.0.1 and on free ports (through
the variables compose sets), and traces are not exported (there is no Jaeger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from devstack.errors import StackError
from devstack.natsclean import clean_namespace
from devstack.procs import ManagedProcess, free_port, tail
from tests.support.images import IMAGES, ROOT, Image, env_pairs, stages
from tests.support.stack import _create_databases, _drop_databases, database_url

# About 150 s of CPU, nine tenths of it building the five environments: a minute and a half on two idle
# cores. The timeout is for a machine others load too; each wait inside has its own, shorter bound.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

COMPOSE = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
#: Host names compose resolves; none may be left in a process's environment here.
COMPOSE_HOSTS = ("nats", "postgres", "redis", "jaeger", "fakellm")
READY_TIMEOUT_S = 60.0
#: How each may end on SIGTERM: exit 0 once drained (each ``__main__`` sees to it).
CLEAN_EXIT = {name: {0} for name in IMAGES}
STOP_TIMEOUT_S = 20.0


# --- running it as compose does ------------------------------------------------------------------
@dataclass
class Outcome:
    """What happened to one image; each test asserts its own."""

    name: str
    problems: list[str] = field(default_factory=list)
    exit_code: int | None = None
    log: Path | None = None
    log_tail: str = ""

    def report(self) -> str:
        return "\n".join(self.problems) + (f"\n--- the end of its log:\n{self.log_tail}" if self.log_tail else "")


def health_check(name: str) -> tuple[int, str]:
    """The port and path compose's health check probes."""
    check = " ".join(COMPOSE["services"][name]["healthcheck"]["test"])
    m = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
    assert m, f"{name}: no HTTP health check in compose"
    return int(m[1]), m[2]


def compose_env(name: str, replace: dict[str, str]) -> dict[str, str]:
    """Compose's variables for ``name``: ``${VAR:-default}`` as compose would with VAR unset, and each
    one that names a compose host replaced by what this test runs (``replace``; ``""``: left out)."""
    env = {}
    for key, value in (COMPOSE["services"][name].get("environment") or {}).items():
        if key in replace:
            if replace[key]:
                env[key] = replace[key]
            continue
        env[key] = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        assert "${" not in env[key], f"{name}: {key}={value} needs a value from this test"
    for key, value in env.items():
        assert not re.search(rf"//({'|'.join(COMPOSE_HOSTS)})[:/]", value), (
            f"{name}: {key}={value} names a compose host"
        )
    return env


def command(name: str, image: Image, runtime: list[tuple[str, str]], replace: dict[str, str]) -> ManagedProcess:
    """The runtime stage's ``CMD`` with its ``ENV``, compose's variables and ``replace`` on top, on a free
    loopback port: the variable holding the ``EXPOSE``d port (or the ``--port`` argument) is changed."""
    (expose,) = [int(args) for kind, args in runtime if kind == "EXPOSE"]
    check_port, check_path = health_check(name)
    assert check_port == expose, f"{name}: compose checks port {check_port}, the image exposes {expose}"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(image.path("/app")), "LANG": "C.UTF-8"}
    for kind, args in runtime:
        if kind == "ENV":
            env.update({k: image.to_host(v) for k, v in env_pairs(args, env).items()})
    env.update(compose_env(name, replace))
    (cmd,) = [json.loads(args) for kind, args in runtime if kind == "CMD"]
    port = free_port()
    port_vars = [k for k, v in env.items() if v == str(expose)]
    if "--port" in cmd:
        assert not port_vars, f"{name}: the port is both an argument and {port_vars}"
        cmd[cmd.index("--port") + 1] = str(port)
        if "--host" in cmd:
            cmd[cmd.index("--host") + 1] = "127.0.0.1"
    else:
        (port_var,) = port_vars
        env[port_var] = str(port)
        env[port_var.replace("PORT", "HOST")] = "127.0.0.1"
    executable = shutil.which(cmd[0], path=env["PATH"])
    assert executable is not None and Path(executable).is_relative_to(image.venv), f"{name}: {cmd[0]} → {executable}"
    workdir = image.path(next(args for kind, args in runtime if kind == "WORKDIR"))
    workdir.mkdir(parents=True, exist_ok=True)
    return ManagedProcess(
        name,
        [executable, *cmd[1:]],
        log_path=image.rootfs.parent / "run.log",
        env=env,
        ready_url=f"http://127.0.0.1:{port}{check_path}",
        cwd=workdir,
    )


def start_order() -> list[list[str]]:
    """``IMAGES`` in waves: each wave depends (in compose) only on earlier ones and the servers."""
    waves: list[list[str]] = []
    placed: set[str] = set()
    while len(placed) < len(IMAGES):
        wave = [
            n
            for n in IMAGES
            if n not in placed and set(COMPOSE["services"][n].get("depends_on") or {}) & set(IMAGES) <= placed
        ]
        assert wave, "compose's depends_on has a cycle"
        waves.append(wave)
        placed |= set(wave)
    return waves


def compose_env_keys(name: str) -> set[str]:
    return set(COMPOSE["services"][name].get("environment") or {})


@contextlib.contextmanager
def servers_of_its_own(nats_url: str, postgres_url: str) -> Iterator[tuple[str, dict[str, str]]]:
    """A NATS namespace and a fresh database per service that has one; all removed afterwards."""
    namespace = f"img{secrets.token_hex(4)}"
    dbs = {
        name: f"sbimg_{namespace}_{name}" for name in IMAGES if f"{name.upper()}_DATABASE_URL" in compose_env_keys(name)
    }
    asyncio.run(_create_databases(postgres_url, list(dbs.values())))
    try:
        yield namespace, {name: database_url(postgres_url, db) for name, db in dbs.items()}
    finally:
        asyncio.run(_drop_databases(postgres_url, list(dbs.values())))
        asyncio.run(clean_namespace(nats_url, namespace))


def run_all(images: dict[str, Image], nats_url: str, postgres_url: str, redis_url: str) -> dict[str, Outcome]:
    outcomes = {name: Outcome(name) for name in IMAGES}
    for name, image in images.items():
        if image.error:
            outcomes[name].problems.append(f"the image does not build: {image.error}")
            outcomes[name].log = image.log
    started: dict[str, ManagedProcess] = {}
    with servers_of_its_own(nats_url, postgres_url) as (namespace, databases):
        fakellm_url = ""
        try:
            for wave in start_order():
                for name in wave:
                    if images[name].error:
                        continue
                    replace = {
                        "NATS_URL": nats_url,
                        "SWITCHBOARD_NAMESPACE": namespace,
                        "REDIS_URL": redis_url,
                        "OTEL_EXPORTER_OTLP_ENDPOINT": "",
                        "ADMIN_TOKEN": secrets.token_hex(32),
                        "OPENAI_BASE_URL": f"{fakellm_url}/v1",
                        "ANTHROPIC_BASE_URL": fakellm_url,
                    }
                    if name in databases:
                        replace[f"{name.upper()}_DATABASE_URL"] = databases[name]
                    _, runtime = stages(name)
                    process = command(name, images[name], runtime, replace)
                    outcomes[name].log = process.log_path
                    process.start()
                    started[name] = process
                _wait_ready([started[n] for n in wave if n in started], outcomes)
                if "fakellm" in wave and "fakellm" in started:
                    fakellm_url = started["fakellm"].ready_url.rpartition("/")[0]  # type: ignore[union-attr]
        finally:
            # SIGTERM in reverse start order, as compose stops a stack; each must end by itself, with 0.
            for name in reversed(list(started)):
                process = started[name]
                begun = time.monotonic()
                was_running = process.running
                code = process.stop(STOP_TIMEOUT_S)
                outcomes[name].exit_code = code
                if not was_running:
                    continue  # already reported: it exited before it was ready
                if time.monotonic() - begun >= STOP_TIMEOUT_S:
                    outcomes[name].problems.append(f"still running {STOP_TIMEOUT_S:.0f}s after SIGTERM (killed)")
                elif code not in CLEAN_EXIT[name]:
                    outcomes[name].problems.append(f"exited with code {code} on SIGTERM")
    return outcomes


def _wait_ready(processes: list[ManagedProcess], outcomes: dict[str, Outcome]) -> None:
    def wait(process: ManagedProcess) -> None:
        try:
            process.wait_ready(READY_TIMEOUT_S)
        except StackError as exc:
            outcomes[process.name].problems.append(str(exc).partition("; log")[0])

    with ThreadPoolExecutor(max_workers=max(1, len(processes))) as pool:
        list(pool.map(wait, processes))


@pytest.fixture(scope="module")
def outcomes(built_images: dict[str, Image], nats_url: str, postgres_url: str, redis_url: str) -> dict[str, Outcome]:
    """Every image started, probed and stopped once; the tests read what happened to each."""
    results = run_all(built_images, nats_url, postgres_url, redis_url)
    for outcome in results.values():
        if outcome.log is not None:
            outcome.log_tail = tail(outcome.log, 60)
    return results


@pytest.mark.parametrize("name", IMAGES)
def test_image_builds_alone_starts_ready_and_stops_cleanly(outcomes: dict[str, Outcome], name: str) -> None:
    outcome = outcomes[name]
    problems = outcome.problems
    assert not problems, f"{name}:\n{outcome.report()}"
    assert outcome.exit_code in CLEAN_EXIT[name]
