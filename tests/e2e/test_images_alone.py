"""Each image's environment, built alone as its Dockerfile builds it, starts, gets ready and stops cleanly.

Why this exists: the development environment holds every package at once, so a module that one
package imports but only another declares works in every other test and fails only in the image
(billing's ``health.py`` imported ``orjson``, which only the gateway and the runner declared: the
billing image could not start). ``tests/unit/deploy/test_declared_dependencies.py`` compares imports
with declarations statically; this test checks the result the way production meets it.

No Docker engine is needed. For each image (the four services and the fake LLM) the build stage of its
Dockerfile is carried out here step by step: ``COPY`` (honouring ``.dockerignore``), ``ENV``,
``WORKDIR`` and ``RUN`` as written — ``python -m venv``, ``requirements.py``, ``pip install -c
constraints.txt``, the workspace packages with ``--no-deps``, ``pip check`` — with ``/opt/venv`` a fresh
virtual environment of this interpreter's base Python. Then the runtime stage's ``CMD`` runs with its
``ENV`` and compose's variables for the service, pointed at this machine's NATS (a namespace of its
own), PostgreSQL (a fresh database per service) and Redis, in compose's start order. Each must answer
200 on the path of its compose health check, then end cleanly on SIGTERM.

Differences from ``docker build``, none of which changes what gets installed or how it starts: pip
installs from one directory filled beforehand by a single ``pip download`` of the same pinned
versions (five resolutions against the index cost minutes), it compiles no bytecode at install, the
processes listen on 127.0.0.1 and on free ports (through the variables compose sets), and traces are
not exported (there is no Jaeger).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from devstack.errors import StackError
from devstack.natsclean import clean_namespace
from devstack.procs import ManagedProcess, free_port, tail
from tests.support.stack import _create_databases, _drop_databases, database_url

# About 150 s of CPU, nine tenths of it building the five environments: a minute and a half on two idle
# cores. The timeout is for a machine others load too; each wait inside has its own, shorter bound.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "deploy/compose/compose.yaml").read_text())
#: Every image, in compose's start order (each after what it depends on).
IMAGES = ("fakellm", "catalog", "billing", "runner", "gateway")
#: Host names compose resolves; none may be left in a process's environment here.
COMPOSE_HOSTS = ("nats", "postgres", "redis", "jaeger", "fakellm")
READY_TIMEOUT_S = 60.0
#: How each may end on SIGTERM: exit 0 once drained (each ``__main__`` sees to it).
CLEAN_EXIT = {name: {0} for name in IMAGES}
STOP_TIMEOUT_S = 20.0
#: Variables of this process that would change what an install or an interpreter does.
_NOT_INHERITED = re.compile(r"^(PYTHON\w*|VIRTUAL_ENV\w*|CONDA\w*)$")


# --- the Dockerfile ------------------------------------------------------------------------------
def package_dir(name: str) -> Path:
    return ROOT / ("libs" if name == "fakellm" else "services") / name


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (kind.upper(), args.strip())
        for line in joined.splitlines()
        if line.strip()
        for kind, _, args in [line.strip().partition(" ")]
    ]


def stages(name: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The build stage's instructions and the runtime stage's."""
    steps = instructions((package_dir(name) / "Dockerfile").read_text())
    froms = [i for i, (kind, _) in enumerate(steps) if kind == "FROM"]
    assert len(froms) == 2, f"{name}: a build stage and a runtime stage"
    return steps[froms[0] + 1 : froms[1]], steps[froms[1] + 1 :]


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], ""), value)


def env_pairs(args: str, env: dict[str, str]) -> dict[str, str]:
    """``ENV A=1 B=$B:x`` → ``{"A": "1", "B": "…:x"}``."""
    return {key: expand(value, env) for key, _, value in (word.partition("=") for word in shlex.split(args))}


@dataclass
class Image:
    """One image's file system, as far as this test needs it: ``rootfs/opt/venv`` and the build's log."""

    name: str
    rootfs: Path
    log: Path
    error: str | None = None

    @property
    def venv(self) -> Path:
        return self.rootfs / "opt" / "venv"

    def path(self, container_path: str) -> Path:
        return self.rootfs / container_path.lstrip("/")

    def to_host(self, text: str) -> str:
        return text.replace("/opt/venv", str(self.venv))


def copy_into(image: Image, args: str, workdir: Path) -> None:
    """``COPY src… dest`` from the repository root (the build context), as Docker does it."""
    *sources, dest = shlex.split(args)
    assert not dest.startswith("--") and not any(s.startswith("--") for s in sources), args
    ignored = [
        line.strip()[3:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip().startswith("**/")
    ]
    target = workdir / dest
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            shutil.copytree(src, target, ignore=shutil.ignore_patterns(*ignored), dirs_exist_ok=True)
        elif dest.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / src.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def build(name: str, base: Path, python_dir: Path, wheelhouse: Path, downloaded: Future[None]) -> Image:
    """Carry out the build stage of ``name``'s Dockerfile under ``base`` (``/`` of its file system),
    pip finding distributions in ``wheelhouse`` alone (once ``downloaded`` is done)."""
    image = Image(name, base / "rootfs", base / "build.log")
    image.rootfs.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not _NOT_INHERITED.match(k)}
    # The base image's ``python`` is this interpreter's base Python, first on the PATH.
    env["PATH"] = f"{python_dir}:/usr/local/bin:/usr/bin:/bin"
    env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    # No bytecode compiled at install (``--no-compile``; pip reads ``PIP_NO_COMPILE`` backwards): a third
    # of the install's time, and the interpreter compiles what it imports anyway.
    env["PIP_COMPILE"] = "0"
    workdir = image.rootfs
    build_steps, _ = stages(name)
    with image.log.open("w") as log:
        for kind, args in build_steps:
            if kind == "ENV":
                env.update({k: image.to_host(v) for k, v in env_pairs(args, env).items()})
            elif kind == "WORKDIR":
                workdir = image.path(args)
                workdir.mkdir(parents=True, exist_ok=True)
            elif kind == "COPY":
                copy_into(image, args, workdir)
            elif kind == "RUN":
                if re.search(r"\bpip\b", args):
                    downloaded.result()
                command = image.to_host(args)
                log.write(f"$ {command}\n")
                log.flush()
                begun = time.monotonic()
                done = subprocess.run(
                    ["/bin/sh", "-c", command], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT, check=False
                )
                log.write(f"# exit code {done.returncode} after {time.monotonic() - begun:.1f}s\n")
                if done.returncode != 0:
                    image.error = f"RUN {args}\nfailed with exit code {done.returncode}"
                    break
            else:
                assert kind == "ARG", f"{name}: the build stage has a {kind} this test does not carry out"
    return image


def download(base: Path, wheelhouse: Path) -> None:
    """Every distribution the images' builds install, in one directory: what their ``requirements.py``
    steps list together, within the constraints, and the packages' build backend. One download, with
    this environment's pip (pinned, like everything else) and its index settings and cache; the
    images' own pip, which ``python -m venv`` brings and may be older, then installs the same pinned
    versions it would have found in the index."""
    dirs: set[str] = set()
    backends: set[str] = set()
    for name in IMAGES:
        build_steps, _ = stages(name)
        for kind, args in build_steps:
            m = re.search(r"\brequirements\.py\s+([^>&|;]+)", args) if kind == "RUN" else None
            if m:
                dirs |= set(m[1].split())
    for directory in dirs:
        with (ROOT / directory / "pyproject.toml").open("rb") as f:
            backends |= set(tomllib.load(f)["build-system"]["requires"])
    assert dirs, "no requirements.py step in any Dockerfile"
    requirements = base / "requirements.txt"
    listed = subprocess.run(
        [sys.executable, str(ROOT / "deploy/docker/requirements.py"), *sorted(dirs)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    requirements.write_text(listed + "".join(f"{b}\n" for b in sorted(backends)))
    env = {k: v for k, v in os.environ.items() if not _NOT_INHERITED.match(k)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--dest",
            str(wheelhouse),
            "-c",
            str(ROOT / "constraints.txt"),
            "-r",
            str(requirements),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"pip download failed:\n{done.stdout}{done.stderr}"


def build_all(base: Path) -> dict[str, Image]:
    """Every image's build stage, all at once."""
    python_dir = base / "python"
    python_dir.mkdir()
    (python_dir / "python").symlink_to(getattr(sys, "_base_executable", sys.executable))
    wheelhouse = base / "wheelhouse"
    with ThreadPoolExecutor(max_workers=len(IMAGES) + 1) as pool:
        # The virtual environments are made while the download runs; pip waits for it.
        downloaded = pool.submit(download, base, wheelhouse)
        futures = {name: pool.submit(build, name, base / name, python_dir, wheelhouse, downloaded) for name in IMAGES}
        return {name: future.result() for name, future in futures.items()}


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
def outcomes(nats_url: str, postgres_url: str, redis_url: str) -> dict[str, Outcome]:
    """Every image built, started, probed and stopped once; the tests read what happened to each."""
    with tempfile.TemporaryDirectory(prefix="switchboard-images-") as tmp:
        results = run_all(build_all(Path(tmp)), nats_url, postgres_url, redis_url)
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
