"""A whole Switchboard stack for tests: real NATS (a namespace of its own), fresh PostgreSQL databases,
the real Redis, the fake LLM, runners and the gateway as processes (:class:`devstack.stack.Stack`).

``running_stack(...)`` is a context manager: it makes the databases, starts the stack with short timeouts
(so failure paths end in seconds), and afterwards stops every process, drops the databases and
deletes the namespace's streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from devstack.natsclean import clean_namespace
from devstack.stack import Stack, StackConfig

#: Short timeouts, so an error path in a test ends in seconds rather than the production defaults.
TEST_TIMEOUTS = {
    "gateway": {"GATEWAY_IDLE_TIMEOUT_S": "3", "GATEWAY_QUEUE_TIMEOUT_S": "3", "GATEWAY_DRAIN_TIMEOUT_S": "2"},
    "runner": {"RUNNER_HEARTBEAT_S": "0.5"},
}


async def _create_databases(postgres_url: str, names: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        for name in names:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _drop_databases(postgres_url: str, names: list[str]) -> None:
    import asyncpg

    conn = await asyncpg.connect(postgres_url)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def database_url(postgres_url: str, name: str) -> str:
    """``postgres_url`` with its database replaced by ``name``."""
    return urlparse(postgres_url)._replace(path=f"/{name}").geturl()


def merge_env(*maps: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
    """Per-service environments merged left to right."""
    out: dict[str, dict[str, str]] = {}
    for m in maps:
        for service, env in m.items():
            out.setdefault(service, {}).update(env)
    return out


@contextlib.contextmanager
def running_stack(
    run_dir: Path,
    *,
    nats_url: str,
    postgres_url: str,
    redis_url: str | None,
    runners: int = 1,
    env: dict[str, str] | None = None,
    service_env: dict[str, dict[str, str]] | None = None,
    supervise: bool = False,
) -> Iterator[Stack]:
    """Start a stack of its own (namespace, databases) and tear all of it down afterwards. Unsupervised
    unless ``supervise``: a service a test kills stays down."""
    namespace = f"e2e{secrets.token_hex(4)}"
    dbs = [f"sbe2e_{namespace}_catalog", f"sbe2e_{namespace}_billing"]
    asyncio.run(_create_databases(postgres_url, dbs))
    config = StackConfig(
        run_dir=run_dir,
        namespace=namespace,
        nats_url=nats_url,
        catalog_database_url=database_url(postgres_url, dbs[0]),
        billing_database_url=database_url(postgres_url, dbs[1]),
        redis_url=redis_url,
        runners=runners,
        env={"LOG_LEVEL": "INFO", **(env or {})},
        service_env=merge_env(TEST_TIMEOUTS, service_env or {}),
        ready_timeout_s=60.0,
        stop_timeout_s=10.0,
        supervise=supervise,
    )
    stack = Stack(config)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        asyncio.run(_drop_databases(postgres_url, dbs))
        if nats_url != "embedded":  # an embedded server's store goes with its run directory
            asyncio.run(clean_namespace(nats_url, namespace))
