"""The admission statement as asyncpg runs it: named parameters become numbered ones, in order."""

from __future__ import annotations

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
