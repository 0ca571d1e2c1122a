"""A catalog or billing that does not migrate on start (the chart's pods: its hook Job migrates) and is
started before its schema exists stays alive but not ready, says why on ``/readyz``, and becomes ready
by itself once ``python -m <service> migrate`` has run — it never crash-loops."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.natsclean import clean_namespace
from devstack.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAIT_S = 45.0


async def _readyz(port: int, until: Any) -> tuple[int, dict[str, Any]]:
    """Poll ``/readyz`` until ``until(status, body)`` holds (or the wait's bound ends the test)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        async with asyncio.timeout(WAIT_S):
            while True:
                try:
                    r = await http.get("/readyz")
                    if until(r.status_code, r.json()):
                        return r.status_code, r.json()
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)


@pytest.mark.parametrize("service", ["catalog", "billing"])
async def test_started_before_its_schema_it_waits_not_ready_then_serves(
    service: str, database_url: str, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    prefix = service.upper()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.endswith("REDIS_URL")}
    env.update(
        {
            "NATS_URL": nats_url,
            "SWITCHBOARD_NAMESPACE": namespace,
            f"{prefix}_DATABASE_URL": database_url,
            f"{prefix}_HEALTH_PORT": str(port),
            f"{prefix}_HEALTH_HOST": "127.0.0.1",
            f"{prefix}_MIGRATE_ON_START": "false",
        }
    )
    log_path = tmp_path / f"{service}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", service, env=env, stdout=log_file, stderr=asyncio.subprocess.STDOUT
        )
    try:
        status, body = await _readyz(port, lambda _, body: "schema" in body)
        assert status == 503 and body["status"] == "not ready" and body["phase"] == "starting"
        assert body["schema"] == (
            f"schema '{service}' is not created, this version needs "
            f"{body['schema'].rpartition(' needs ')[2].split(':')[0]}: run the migrations first"
        )
        assert proc.returncode is None  # waiting, not crashed

        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            service,
            "migrate",
            "--wait-s",
            "10",
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(migrate.wait(), WAIT_S) == 0

        status, body = await _readyz(port, lambda status, _: status == 200)
        assert body["status"] in ("ready", "degraded") and "schema" not in body
    finally:
        if proc.returncode is None:
            proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 30)
        await clean_namespace(nats_url, namespace)
    log = log_path.read_text(errors="replace")
    assert code == 0, log[-3000:]
    # The wait was never silent: the log says what is missing and what to run.
    assert f"schema '{service}' is not created" in log and f"python -m {service} migrate" in log


async def test_a_schema_behind_is_a_problem_one_ahead_is_not(database_url: str) -> None:
    import asyncpg

    import billing.db
    from servicekit.db import schema_problem

    where = {"schema": "billing", "script_location": Path(billing.db.__file__).parent / "migrations"}
    assert await schema_problem(database_url, **where) == (
        "schema 'billing' is not created, this version needs 0002: run the migrations first"
    )
    await billing.db.migrate(database_url)
    assert await schema_problem(database_url, **where) is None
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("UPDATE billing.alembic_version SET version_num = '0001'")
        assert await schema_problem(database_url, **where) == (
            "schema 'billing' is at revision 0001, this version needs 0002: run the migrations first"
        )
        # A newer release's revision: this (older) code starts on it (migrations only add).
        await conn.execute("UPDATE billing.alembic_version SET version_num = '0099_future'")
        assert await schema_problem(database_url, **where) is None
    finally:
        await conn.close()
