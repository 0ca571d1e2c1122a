"""The catalog's basic path on a database it creates itself, in-process and as ``python -m catalog``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from typing import Any

import httpx
import pytest

from catalog.app import CatalogRuntime
from contracts import Subjects
from tests.support.pg import database_exists

from .conftest import CatalogClient, catalog_settings

pytestmark = pytest.mark.integration


async def test_basic_path_on_a_database_it_creates(
    missing_database: tuple[str, str], postgres_url: str, nats_url: str, namespace: str, nats_client: Any
) -> None:
    url, name = missing_database
    assert not await database_exists(postgres_url, name)
    rt = CatalogRuntime(catalog_settings(nats_url=nats_url, nats_namespace=namespace, database_url=url))
    async with rt.running():
        c = CatalogClient(nats_client, Subjects(namespace))
        ann, bob = await c.user("Ann", email="ann@example.com"), await c.user("Bob")
        _, key_hash, _ = await c.key(ann)
        agent = await c.agent(ann)
        verified = await c.verify(key_hash)
        assert verified.principal is not None and verified.principal.user_id == ann
        assert (await c.access(ann, agent)).agent is not None
        assert (await c.access(bob, agent)).error is not None
        assert await c.models(ann) == [agent]
        assert (await c.admin("users.create", body={"name": "dup", "email": "ann@example.com"})).status == 409
        page = await c.ok("users.list", query={"limit": "1"})
        assert [u["id"] for u in page["data"]] == [ann] and page["has_more"]
        assert [u["id"] for u in (await c.ok("users.list", query={"after": ann}))["data"]] == [bob]
    assert await database_exists(postgres_url, name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_python_m_catalog_serves_and_exits_cleanly_on_sigterm(
    database_url: str, nats_url: str, namespace: str, nats_client: Any
) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "NATS_URL": nats_url,
        "SWITCHBOARD_NAMESPACE": namespace,
        "CATALOG_DATABASE_URL": database_url,
        "CATALOG_HEALTH_PORT": str(port),
        "CATALOG_HEALTH_HOST": "127.0.0.1",
    }
    env.pop("REDIS_URL", None)
    env.pop("CATALOG_REDIS_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "catalog", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready() -> dict[str, Any]:
                while True:
                    try:
                        r = await http.get("/readyz")
                        if r.status_code == 200:
                            return r.json()
                    except httpx.TransportError:
                        pass
                    await asyncio.sleep(0.1)  # polling a process that is starting: there is no event to wait on

            checks = await asyncio.wait_for(ready(), 20)
            # The body every service answers; Redis is not set, so there is nothing optional.
            assert checks == {
                "status": "ready",
                "checks": {"nats": True, "database": True},
                "optional": {},
                "phase": "serving",
            }
            assert (await http.get("/healthz")).status_code == 200
            c = CatalogClient(nats_client, Subjects(namespace))
            uid = await c.user()
            assert (await c.ok("users.get", {"user_id": uid}))["id"] == uid
            metrics = (await http.get("/metrics")).text
            assert 'catalog_requests_total{handler="admin",outcome="201"} 1.0' in metrics
            # Without Redis there is no cache to be unavailable: no gauge saying 0 (an alert on it
            # would fire for as long as the catalog runs).
            assert "catalog_redis_available" not in metrics
        proc.send_signal(signal.SIGTERM)
        rc = await asyncio.wait_for(proc.wait(), 15)
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = (await proc.stdout.read()).decode() if proc.stdout else ""  # type: ignore[union-attr]
    assert "Traceback" not in out, out
    json.dumps(out)


async def test_redis_down_means_uncached_not_broken(
    database_url: str, nats_url: str, namespace: str, nats_client: Any
) -> None:
    dead_redis = f"redis://127.0.0.1:{_free_port()}/0"
    rt = CatalogRuntime(
        catalog_settings(
            nats_url=nats_url,
            nats_namespace=namespace,
            database_url=database_url,
            redis_url=dead_redis,
        )
    )
    async with rt.running():
        c = CatalogClient(nats_client, Subjects(namespace))
        uid = await c.user()
        _, key_hash, created = await c.key(uid)
        assert (await c.verify(key_hash)).principal is not None
        await c.ok("api_keys.revoke", {"key_id": created["id"]})
        assert (await c.verify(key_hash)).error is not None
        # Redis never decides readiness: the catalog is ready, degraded, and says why.
        readiness = await rt.health.readiness()
        assert readiness.http_status == 200
        assert readiness.body() == {
            "status": "degraded",
            "checks": {"nats": True, "database": True},
            "optional": {"redis": False},
            "phase": "serving",
        }
