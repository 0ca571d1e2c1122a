"""A service's ``migrate`` command: 0 once migrated, 1 with the reason logged when it cannot be."""

from __future__ import annotations

import logging

import pytest

from devstack.procs import free_port
from servicekit.db import run_migrations


def test_a_database_that_never_answers_is_a_1_with_the_reason_logged(caplog: pytest.LogCaptureFixture) -> None:
    called: list[str] = []

    async def migrate(url: str) -> None:
        called.append(url)

    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens there
    with caplog.at_level(logging.ERROR, logger="catalog"):
        assert run_migrations("catalog", url, 0.5, migrate) == 1
    assert not called, "migrations never start before PostgreSQL answers"
    assert "catalog migrations failed" in caplog.text


def test_a_failing_migration_is_a_1(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    import servicekit.db

    async def answers(url: str, *, timeout_s: float, interval_s: float = 1.0) -> None:
        return None

    async def migrate(url: str) -> None:
        raise RuntimeError("revision 0042 failed")

    monkeypatch.setattr(servicekit.db, "wait_for_database", answers)
    with caplog.at_level(logging.ERROR, logger="billing"):
        assert run_migrations("billing", "postgresql://x/y", 1, migrate) == 1
    assert "revision 0042 failed" in caplog.text


def test_a_migration_that_succeeds_is_a_0(monkeypatch: pytest.MonkeyPatch) -> None:
    import servicekit.db

    async def answers(url: str, *, timeout_s: float, interval_s: float = 1.0) -> None:
        return None

    done: list[str] = []

    async def migrate(url: str) -> None:
        done.append(url)

    monkeypatch.setattr(servicekit.db, "wait_for_database", answers)
    assert run_migrations("billing", "postgresql://x/y", 1, migrate) == 0
    assert done == ["postgresql://x/y"]
