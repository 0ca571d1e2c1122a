"""The whole product as real processes on one machine: ``make run`` and the end-to-end tests use it.

A :class:`Stack` starts, in order, an embedded ``nats-server`` (unless a NATS URL is given), an
embedded PostgreSQL (unless database URLs are given; its data is kept under ``<run_dir>/postgres``
across restarts), the fake LLM (unless the provider base URLs are given), then catalog, billing and
N runners (together), then
the gateway, each as ``python -m <service>`` with a free health port of its own and its output in
``<run_dir>/logs/<name>.log``, and waits for each ``/readyz``. :meth:`Stack.stop` stops them in reverse.

    with Stack(StackConfig(run_dir=tmp)) as stack:
        httpx.get(stack.gateway_url + "/readyz")

Names of the processes: ``nats``, ``postgres``, ``fakellm``, ``catalog``, ``billing``, ``runner-0`` … ``runner-{N-1}``,
``gateway``. :meth:`Stack.kill` / :meth:`Stack.stop_service` / :meth:`Stack.restart` take a name, or
``"runner"`` for every runner.

With ``StackConfig(supervise=True)`` (``make run``) a process that exits without being asked to — the
services, the fake LLM, an embedded NATS — is started again with a back-off and each exit and restart
is reported (:mod:`devstack.supervise`); :meth:`Stack.kill` is then a crash the stack recovers from,
while :meth:`Stack.stop_service` stays a stop on purpose. The embedded PostgreSQL (``pg_ctl``, a daemon
of its own) is not supervised. Without it (the tests' stacks) a process that dies stays down.
"""

from __future__ import annotations

import os
import re
import secrets
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlparse

from .embedded import EmbeddedNats
from .embedded_pg import EmbeddedPostgres
from .errors import StackError
from .procs import ManagedProcess, free_port, tail
from .supervise import Supervisor

#: Variables the stack sets itself: inherited values would silently point a service elsewhere.
_MANAGED_PREFIXES = ("CATALOG_", "BILLING_", "RUNNER_", "GATEWAY_", "OPENAI_", "ANTHROPIC_", "OTEL_")
_MANAGED_NAMES = frozenset(
    {"NATS_URL", "DATABASE_URL", "TEST_DATABASE_URL", "REDIS_URL", "SWITCHBOARD_NAMESPACE", "ADMIN_TOKEN"}
)
_FAKELLM_READY = re.compile(r"FAKELLM_READY (\S+)")
#: Placeholder key for the fake LLM (it accepts any); real providers get the caller's key.
FAKE_PROVIDER_KEY = "sk-fake-provider-key"


@dataclass
class StackConfig:
    """What to run and where. Every field has a workable default for a laptop."""

    run_dir: Path
    """Logs (``logs/``), the embedded NATS store and the embedded PostgreSQL's data go under it."""
    namespace: str = ""
    """NATS namespace (subject and stream prefix), so several stacks can share one NATS."""
    nats_url: str | None = None
    """An existing NATS with JetStream; ``None`` or ``"embedded"``: start one."""
    catalog_database_url: str | None = None
    """PostgreSQL for the catalog. Default: an embedded PostgreSQL (shared with billing, each in its schema)."""
    billing_database_url: str | None = None
    """PostgreSQL for billing. Default: the same embedded PostgreSQL."""
    redis_url: str | None = None
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 0
    """0: a free port."""
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    provider_env: dict[str, str] = field(default_factory=dict)
    """``OPENAI_BASE_URL``/``OPENAI_API_KEY``/``ANTHROPIC_*`` for the runners. Without ``OPENAI_BASE_URL``
    the fake LLM is started and both connections point at it."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra variables for every service (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``LOG_LEVEL`` …)."""
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)
    """Extra variables per service: keys ``catalog``, ``billing``, ``runner``, ``gateway``, ``fakellm``."""
    runners: int = 1
    fakellm_args: list[str] = field(default_factory=list)
    """Extra arguments for ``python -m fakellm`` (``--ttft-ms 0`` …)."""
    services: tuple[str, ...] = ("catalog", "billing", "runner", "gateway")
    """Which services to run (a subset is useful for a partial stack; the fake LLM comes with runners)."""
    ready_timeout_s: float = 60.0
    stop_timeout_s: float = 15.0
    supervise: bool = False
    """Restart a process that exits unexpectedly, with a back-off (``make run``); off for the tests'
    stacks, which kill services on purpose and expect them to stay down."""
    report: Callable[[str], None] | None = None
    """Where the supervisor reports exits and restarts (default: a warning on the ``devstack`` logger)."""


class Stack:
    """The running stack. Start it with :meth:`start` (or ``with``); stop it with :meth:`stop`."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.run_dir = Path(config.run_dir).resolve()
        self.logs_dir = self.run_dir / "logs"
        self.processes: dict[str, ManagedProcess] = {}
        self._nats: EmbeddedNats | None = None
        self._postgres: EmbeddedPostgres | None = None
        self.nats_url: str = ""
        self.fakellm_url: str | None = None
        self.gateway_port = config.gateway_port
        self._health_ports: dict[str, int] = {}
        self.supervisor: Supervisor | None = None

    # --- public surface -------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        """``http://host:port`` of the gateway (OpenAI routes under ``/v1``, admin under ``/admin/v1``)."""
        return f"http://{self.config.gateway_host}:{self.gateway_port}"

    @property
    def admin_token(self) -> str:
        return self.config.admin_token

    @property
    def runner_names(self) -> list[str]:
        if "runner" not in self.config.services:
            return []
        return [f"runner-{i}" for i in range(self.config.runners)]

    def health_ports(self) -> dict[str, str]:
        """Each running service's health base URL (``/healthz``, ``/readyz``, ``/metrics``), by name."""
        urls = {name: f"http://127.0.0.1:{port}" for name, port in sorted(self._health_ports.items())}
        return {"gateway": self.gateway_url, **urls}

    def health_url(self, name: str) -> str:
        """``/readyz`` of one service."""
        if name == "gateway":
            return f"{self.gateway_url}/readyz"
        return f"http://127.0.0.1:{self._health_ports[name]}/readyz"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def start(self) -> Stack:
        """Start every process in order and wait for each to be ready. On failure, stop what started."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_nats()
            self._start_postgres()
            if "runner" in self.config.services:
                self._start_fakellm()
            self._build_services()
            self._start_and_wait([n for n in ["catalog", "billing", *self.runner_names] if n in self.processes])
            if "gateway" in self.processes:
                self._start_and_wait(["gateway"])
            if self.config.supervise:
                self.supervisor = Supervisor(self.supervised, self.config.report)
                self.supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def supervised(self) -> dict[str, ManagedProcess]:
        """Every process the stack started and can start again: the services, the fake LLM, an embedded NATS."""
        found = dict(self.processes)
        if self._nats is not None:
            found["nats"] = self._nats.process
        return found

    def restarts(self, name: str) -> int:
        """How many times the supervisor restarted ``name`` (0 when the stack is not supervised)."""
        return self.supervisor.restarts(name) if self.supervisor is not None else 0

    def stop(self) -> None:
        """SIGTERM every process (gateway first, NATS last), wait, then SIGKILL what is left."""
        if self.supervisor is not None:
            self.supervisor.stop()  # first: nothing is restarted while the stack stops
            self.supervisor = None
        for name in reversed(list(self.processes)):
            self.processes[name].stop(self.config.stop_timeout_s)
        if self._postgres is not None:
            self._postgres.stop()
        if self._nats is not None:
            self._nats.stop()

    def kill(self, name: str) -> None:
        """SIGKILL a service now (``"runner"``: every runner): a crash, as tests want it (a supervised
        stack starts it again)."""
        for p in self._select(name):
            p.kill()

    def stop_service(self, name: str) -> None:
        """Stop a service gracefully (SIGTERM, then SIGKILL after the stop timeout); a stop on purpose,
        never undone by the supervisor (:meth:`restart` starts it again)."""
        for p in self._select(name):
            p.stop(self.config.stop_timeout_s)

    def restart(self, name: str) -> None:
        """Stop a service (if it runs), start it again on the same ports, and wait until it is ready."""
        selected = list(self._select(name))
        for p in selected:
            p.stop(self.config.stop_timeout_s)
        for p in selected:
            p.start()
        for p in selected:
            p.wait_ready(self.config.ready_timeout_s)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- internals ------------------------------------------------------------------------------
    def _select(self, name: str) -> Iterator[ManagedProcess]:
        found = [p for n, p in self.processes.items() if n == name or n.startswith(f"{name}-")]
        if not found:
            raise StackError(f"no process named {name!r}; have {sorted(self.processes)}")
        return iter(found)

    def _base_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _MANAGED_NAMES and not k.startswith(_MANAGED_PREFIXES)}
        env["PYTHONUNBUFFERED"] = "1"
        env["NATS_URL"] = self.nats_url
        env["SWITCHBOARD_NAMESPACE"] = self.config.namespace
        if self.config.redis_url:
            env["REDIS_URL"] = self.config.redis_url
        if self._nats is not None:
            # One embedded server holds one copy of a stream: a replica count inherited from the shell would fail.
            env["NATS_STREAM_REPLICAS"] = "1"
        env.update(self.config.env)
        return env

    def _start_nats(self) -> None:
        if self.config.nats_url and self.config.nats_url != "embedded":
            self.nats_url = self.config.nats_url
            return
        self._nats = EmbeddedNats(self.run_dir / "nats", self.log_path("nats"))
        self.nats_url = self._nats.start()

    def _needs_postgres(self) -> bool:
        cfg = self.config
        return ("catalog" in cfg.services and not cfg.catalog_database_url) or (
            "billing" in cfg.services and not cfg.billing_database_url
        )

    def _start_postgres(self) -> None:
        if not self._needs_postgres():
            return
        self._postgres = EmbeddedPostgres(self.run_dir / "postgres", max_connections=100)
        self._postgres.start(self.config.ready_timeout_s)

    def _start_fakellm(self) -> None:
        if self.config.provider_env.get("OPENAI_BASE_URL"):
            return
        env = self._base_env()
        env.update(self.config.service_env.get("fakellm", {}))
        p = ManagedProcess(
            "fakellm",
            [sys.executable, "-m", "fakellm", "--host", "127.0.0.1", "--port", "0", *self.config.fakellm_args],
            log_path=self.log_path("fakellm"),
            env=env,
        )
        self.processes["fakellm"] = p
        offset = self.log_path("fakellm").stat().st_size if self.log_path("fakellm").exists() else 0
        p.start()

        def announced() -> bool:
            try:
                with self.log_path("fakellm").open("rb") as f:
                    f.seek(offset)
                    m = _FAKELLM_READY.search(f.read().decode(errors="replace"))
            except OSError:
                return False
            if m:
                self.fakellm_url = m.group(1).rstrip("/")
            return m is not None

        p.wait_until(announced, self.config.ready_timeout_s, "announcing FAKELLM_READY")
        # A restart binds the same port: the runners were told this URL.
        assert self.fakellm_url is not None
        p.argv[p.argv.index("--port") + 1] = str(urlparse(self.fakellm_url).port)

    def _provider_env(self) -> dict[str, str]:
        if self.fakellm_url is None:
            return dict(self.config.provider_env)
        return {
            "OPENAI_BASE_URL": f"{self.fakellm_url}/v1",
            "OPENAI_API_KEY": FAKE_PROVIDER_KEY,
            "ANTHROPIC_BASE_URL": self.fakellm_url,
            "ANTHROPIC_API_KEY": FAKE_PROVIDER_KEY,
            **self.config.provider_env,
        }

    def _build_services(self) -> None:
        cfg = self.config
        embedded = self._postgres.url if self._postgres is not None else ""
        catalog_db = cfg.catalog_database_url or embedded
        billing_db = cfg.billing_database_url or embedded
        specs: list[tuple[str, str, str, dict[str, str]]] = [
            ("catalog", "catalog", "CATALOG_", {"CATALOG_DATABASE_URL": catalog_db}),
            ("billing", "billing", "BILLING_", {"BILLING_DATABASE_URL": billing_db}),
        ]
        for name in self.runner_names:
            specs.append((name, "runner", "RUNNER_", self._provider_env()))
        for name, module, prefix, extra in specs:
            if module not in cfg.services:
                continue
            port = self._health_ports.get(name) or self._promise_port("127.0.0.1")
            self._health_ports[name] = port
            env = self._base_env()
            env.update(extra)
            env[f"{prefix}HEALTH_PORT"] = str(port)
            env[f"{prefix}HEALTH_HOST"] = "127.0.0.1"
            env.update(cfg.service_env.get(module, {}))
            self.processes[name] = ManagedProcess(
                name,
                [sys.executable, "-m", module],
                log_path=self.log_path(name),
                env=env,
                ready_url=f"http://127.0.0.1:{port}/readyz",
            )
        if "gateway" not in cfg.services:
            return
        if not self.gateway_port:
            self.gateway_port = self._promise_port(cfg.gateway_host)
        self.processes["gateway"] = self._gateway_process("gateway", self.gateway_port)

    def _promise_port(self, host: str) -> int:
        """A free port for a process about to start, none promised to another that has not bound its
        own yet (the gateway's, given or chosen, and every health port)."""
        return free_port(host, avoid={self.gateway_port, *self._health_ports.values()})

    def _gateway_process(self, name: str, port: int) -> ManagedProcess:
        cfg = self.config
        env = self._base_env()
        env.update({"GATEWAY_HOST": cfg.gateway_host, "GATEWAY_PORT": str(port), "ADMIN_TOKEN": cfg.admin_token})
        env.update(cfg.service_env.get("gateway", {}))
        return ManagedProcess(
            name,
            [sys.executable, "-m", "gateway"],
            log_path=self.log_path(name),
            env=env,
            ready_url=f"http://{cfg.gateway_host}:{port}/readyz",
        )

    def add_gateway(self) -> str:
        """Start one more gateway replica (same configuration, its own port); returns its base URL."""
        n = sum(1 for name in self.processes if name.startswith("gateway"))
        name, port = f"gateway-{n + 1}", free_port(self.config.gateway_host)
        self.processes[name] = self._gateway_process(name, port)
        self._start_and_wait([name])
        return f"http://{self.config.gateway_host}:{port}"

    def _start_and_wait(self, names: list[str]) -> None:
        for name in names:
            self.processes[name].start()
        with ThreadPoolExecutor(max_workers=len(names)) as pool:
            timeout = self.config.ready_timeout_s
            futures = [pool.submit(self.processes[name].wait_ready, timeout) for name in names]
            errors = []
            for fut in futures:
                exc = fut.exception()
                if exc is not None:
                    errors.append(str(exc))
        if errors:
            raise StackError("\n\n".join(errors))

    def describe(self) -> str:
        """One line per process: name, pid, state, log file (for diagnostics)."""
        lines = []
        for name, p in self.processes.items():
            state = "running" if p.running else f"exited {p.proc.returncode if p.proc else '-'}"
            restarts = f" restarts={self.restarts(name)}" if self.supervisor is not None else ""
            lines.append(f"{name:10} pid={p.pid} {state}{restarts} log={p.log_path}")
        return "\n".join(lines)

    def tail(self, name: str, lines: int = 40) -> str:
        """The last lines of a service's log."""
        return tail(self.log_path(name), lines)
