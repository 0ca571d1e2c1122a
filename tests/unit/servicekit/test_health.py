"""servicekit.health: one readiness body for every service, bounded checks, the health port's answers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

import servicekit.health as health_module
from servicekit.health import (
    METRICS_CONTENT_TYPE,
    Health,
    HealthApp,
    Readiness,
    gather_facts,
    nats_answers,
    run_checks,
)

pytestmark = pytest.mark.unit

#: Short enough to keep the tests quick, long enough for a check that answers at once.
FAST = 0.2


async def passes() -> bool:
    return True


async def fails() -> bool:
    return False


async def raises() -> bool:
    raise ConnectionError("down")


async def hangs() -> bool:
    await asyncio.Event().wait()
    return True


def test_the_body_has_one_shape() -> None:
    r = Readiness({"nats": True, "database": True}, {"redis": True}, "serving", {"dead_letters": 0})
    assert (r.status, r.http_status) == ("ready", 200)
    assert r.body() == {
        "status": "ready",
        "checks": {"nats": True, "database": True},
        "optional": {"redis": True},
        "phase": "serving",
        "dead_letters": 0,
    }


@pytest.mark.parametrize(
    ("readiness", "status", "http_status"),
    [
        (Readiness({"nats": True, "database": False}), "not ready", 503),
        (Readiness({"nats": True}, phase="starting"), "not ready", 503),
        (Readiness({"nats": True}, phase="draining"), "not ready", 503),
        # Optional dependencies and facts never take the service out: degraded is still 200.
        (Readiness({"nats": True}, {"redis": False}), "degraded", 200),
        (Readiness({"nats": True}, degraded=True), "degraded", 200),
        (Readiness({"nats": False}, {"redis": False}, degraded=True), "not ready", 503),
    ],
)
def test_status_follows_checks_phase_and_degradation(readiness: Readiness, status: str, http_status: int) -> None:
    assert (readiness.status, readiness.http_status) == (status, http_status)


async def test_a_hung_or_failing_check_is_false_within_the_timeout() -> None:
    async with asyncio.timeout(FAST * 5):  # the probe answers, however long a dependency hangs
        checks = await run_checks({"ok": passes, "no": fails, "raises": raises, "hangs": hangs}, FAST)
    assert checks == {"ok": True, "no": False, "raises": False, "hangs": False}


async def test_a_check_whose_cancellation_waits_is_still_false_within_the_timeout() -> None:
    """A database call under SQLAlchemy finishes its rollback and close shielded from cancellation
    (seconds, against a hung server); the probe answers on time all the same, and while that check
    winds down the next probe does not start another one."""
    started = 0
    release = asyncio.Event()

    async def stubborn() -> bool:
        nonlocal started
        started += 1
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.shield(release.wait())  # what SQLAlchemy's close does
        return True

    loop = asyncio.get_running_loop()
    begun = loop.time()
    try:
        async with asyncio.timeout(FAST * 5):
            assert await run_checks({"database": stubborn}, FAST) == {"database": False}
    finally:
        release.set() if loop.time() - begun >= FAST * 5 else None
    assert loop.time() - begun < FAST * 3
    assert await run_checks({"database": stubborn}, FAST) == {"database": False}
    assert started == 1  # still winding down: not started again
    release.set()
    for _ in range(50):
        await asyncio.sleep(0.01)
        if not health_module._WINDING_DOWN:
            break
    assert not health_module._WINDING_DOWN
    await run_checks({"database": stubborn}, FAST)
    assert started == 2  # wound down: the next probe asks again


async def test_only_true_passes() -> None:
    async def returns_none() -> Any:
        return None

    assert await run_checks({"none": returns_none}, FAST) == {"none": False}


async def test_checks_run_at_once() -> None:
    """``first`` can only pass while ``second`` runs: in sequence it would time out."""
    second_started = asyncio.Event()

    async def first() -> bool:
        await second_started.wait()
        return True

    async def second() -> bool:
        second_started.set()
        return True

    assert await run_checks({"first": first, "second": second}, FAST) == {"first": True, "second": True}


async def test_a_fact_that_fails_or_hangs_is_null() -> None:
    async def count() -> int:
        return 3

    facts = await gather_facts({"count": count, "raises": raises, "hangs": hangs}, FAST)
    assert facts == {"count": 3, "raises": None, "hangs": None}


async def test_health_reports_phase_checks_optional_and_facts() -> None:
    async def parked() -> int:
        return 2

    health = Health(
        {"nats": passes, "database": passes},
        optional={"redis": fails},
        facts={"dead_letters": parked},
        degraded=lambda facts: bool(facts["dead_letters"]),
        metrics=lambda: b"",
        timeout_s=FAST,
    )
    assert (await health.readiness()).body()["status"] == "not ready"  # not serving yet
    health.phase = "serving"
    body = (await health.readiness()).body()
    assert body == {
        "status": "degraded",
        "checks": {"nats": True, "database": True},
        "optional": {"redis": False},
        "phase": "serving",
        "dead_letters": 2,
    }


def test_a_fact_may_not_hide_a_field_of_the_shape() -> None:
    with pytest.raises(ValueError, match="status"):
        Health({}, facts={"status": passes}, metrics=lambda: b"")


async def test_no_nats_client_or_a_disconnected_one_is_not_ready() -> None:
    class Disconnected:
        is_connected = False

    assert await nats_answers(None) is False
    assert await nats_answers(Disconnected()) is False  # type: ignore[arg-type]


async def test_the_health_app_answers_the_three_paths() -> None:
    health = Health({"nats": passes}, metrics=lambda: b"m_total 1.0\n", timeout_s=FAST)
    transport = httpx.ASGITransport(app=HealthApp(health))
    async with httpx.AsyncClient(transport=transport, base_url="http://health") as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        starting = await http.get("/readyz")
        assert starting.status_code == 503 and starting.json()["phase"] == "starting"
        health.phase = "serving"
        ready = await http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "checks": {"nats": True}, "optional": {}, "phase": "serving"}
        assert ready.headers["cache-control"] == "no-store"
        metrics = await http.get("/metrics")
        assert metrics.content == b"m_total 1.0\n" and metrics.headers["content-type"] == METRICS_CONTENT_TYPE
        head = await http.head("/readyz")
        assert head.status_code == 200 and head.content == b""
        assert (await http.get("/nope")).status_code == 404
        assert (await http.post("/healthz")).status_code == 405


async def test_the_body_is_json_of_the_shape() -> None:
    health = Health({"nats": fails}, metrics=lambda: b"", timeout_s=FAST)
    status, ctype, body = await HealthApp(health).answer("GET", "/readyz")
    assert (status, ctype) == (503, "application/json")
    assert json.loads(body) == {"status": "not ready", "checks": {"nats": False}, "optional": {}, "phase": "starting"}


async def test_liveness_fails_only_for_a_state_the_process_cannot_leave() -> None:
    dead = {"loop": False}
    health = Health({"nats": fails}, metrics=lambda: b"", alive=lambda: not dead["loop"], timeout_s=FAST)
    app = HealthApp(health)
    assert (await app.answer("GET", "/healthz"))[0] == 200  # NATS down: not ready, still alive
    dead["loop"] = True
    status, _, body = await app.answer("GET", "/healthz")
    assert status == 503 and json.loads(body) == {"status": "dead"}
