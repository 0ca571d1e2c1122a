"""The admission statement as asyncpg runs it: named parameters become numbered ones, in order; and one
user's admissions that arrive while one of theirs is in flight go together in the next statement."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from billing.admitpath import AdmitPath, _positional


def test_named_parameters_become_numbered_once_each() -> None:
    sql, names = _positional(text("SELECT :a, :b::int, CAST(:a AS text) WHERE x = :c"))
    assert names == ["a", "b", "c"]
    assert sql == "SELECT $1, $2::int, CAST($1 AS text) WHERE x = $3"


def test_the_admission_statement_takes_every_parameter_the_ledger_sends() -> None:
    path = AdmitPath("postgresql+asyncpg://u@h/db")
    assert sorted(path._names) == ["cost", "expires", "now", "rid", "run_id", "user_id"]
    assert path._dsn == "postgresql://u@h/db"


class _Scripted(AdmitPath):
    """The coalescing alone: each statement waits until the test lets it finish, and is recorded."""

    def __init__(self) -> None:
        super().__init__("postgresql+asyncpg://u@h/db")
        self.statements: list[list[str]] = []
        self.go = asyncio.Event()

    async def _one(self, params: dict[str, Any]) -> Any:
        self.statements.append([params["run_id"]])
        await self.go.wait()
        return f"res-{params['run_id']}"

    async def _many(self, user_id: str, batch: list[Any]) -> dict[str, str]:
        runs = [p["run_id"] for p, _ in batch]
        self.statements.append(runs)
        await self.go.wait()
        return {r: f"res-{r}" for r in runs}


def _admit(path: AdmitPath, run: str, user: str = "u") -> asyncio.Task[Any]:
    return asyncio.create_task(path.admit(run_id=run, user_id=user, rid=f"r-{run}", cost=1, expires=0, now=0))


async def _turn() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_a_lone_admission_goes_at_once_and_what_comes_meanwhile_goes_together() -> None:
    path = _Scripted()
    first = _admit(path, "a")
    await _turn()
    assert path.statements == [["a"]]  # nothing waited for company
    others = [_admit(path, run) for run in ("b", "c", "b", "d")]
    elsewhere = _admit(path, "x", user="v")  # another user's: not held up by this one's
    gone = _admit(path, "e")
    await _turn()
    gone.cancel()  # its asker left before the batch started: nothing is held for it
    await _turn()
    assert path.statements == [["a"], ["x"]]
    path.go.set()
    results = await asyncio.gather(first, *others, elsewhere)
    assert results == ["res-a", "res-b", "res-c", "res-b", "res-d", "res-x"]
    # b twice: the second goes in the next statement (one statement may touch a run once)
    assert path.statements == [["a"], ["x"], ["b", "c", "d"], ["b"]]
    assert path._waiting == {} and not path._batches


async def test_a_batch_stopped_with_the_process_cancels_who_waits_and_starts_no_other() -> None:
    class Stuck(_Scripted):
        async def _many(self, user_id: str, batch: list[Any]) -> dict[str, str]:
            self.statements.append([p["run_id"] for p, _ in batch])
            await asyncio.Event().wait()  # in flight until the process stops
            raise AssertionError("unreachable")

    path = Stuck()
    first = _admit(path, "a")
    await _turn()
    batched = [_admit(path, run) for run in ("b", "c")]
    await _turn()
    path.go.set()
    await first
    await _turn()
    assert path.statements[-1] == ["b", "c"]  # in flight
    later = _admit(path, "d")  # waits for the batch in flight
    await _turn()
    for task in list(path._batches):
        task.cancel()
    await _turn()
    assert all(t.cancelled() for t in [*batched, later])
    assert path.statements[-1] == ["b", "c"] and not path._batches and "u" not in path._waiting
