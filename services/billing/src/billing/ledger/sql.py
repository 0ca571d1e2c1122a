"""The ledger's PostgreSQL statements, in plain SQL.

A batch's rows go in as one array per column (``unnest``), so each statement has a fixed shape —
prepared once per connection, no per-batch SQL compilation — and is one round trip whatever the batch
size. ``SCHEMA`` is a constant of billing, never input. Named parameters (``:name``) are SQLAlchemy's;
:mod:`billing.admitpath` turns :data:`ADMIT`'s into asyncpg's ``$n``.
"""

from __future__ import annotations

from sqlalchemy import text

from ..db import SCHEMA

#: Admission in one round trip: the conditional UPDATE feeds the reservation upsert, so either both
#: happen or neither (a data-modifying CTE is one atomic statement). ``prior`` locks the run's existing
#: reservation (a redelivered request) BEFORE the account row — the global lock order; its count is a
#: one-time filter, evaluated before the account is read.
ADMIT = text(
    f"WITH prior AS MATERIALIZED (SELECT id FROM {SCHEMA}.reservations WHERE run_id = :run_id FOR UPDATE),"  # noqa: S608
    f" room AS (UPDATE {SCHEMA}.accounts SET reserved = reserved + :cost"
    " WHERE user_id = :user_id AND balance - reserved >= :cost AND (SELECT count(*) FROM prior) >= 0"
    " RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.reservations (id, run_id, user_id, remaining, expected_calls, expires_at, created_at)"
    " SELECT :rid, :run_id, user_id, :cost, NULL, :expires, :now FROM room"
    " ON CONFLICT (run_id) DO UPDATE SET remaining = reservations.remaining + EXCLUDED.remaining,"
    " expires_at = EXCLUDED.expires_at RETURNING id"
)

#: :data:`ADMIT` for several runs of one user at once, all or none: the account's room must cover
#: their total, so each run is admitted exactly as it would have been one after another. Used for the
#: admissions of one user that arrive while one of theirs is being admitted (a burst), in one round
#: trip and one update of the account row instead of one each, every one waiting for the last one's
#: row lock. The runs' existing reservations are locked first, in run order (the global lock order).
#: The runs are distinct (``ON CONFLICT`` may touch a row once per statement).
ADMIT_MANY = text(
    f"WITH prior AS MATERIALIZED (SELECT id FROM {SCHEMA}.reservations"  # noqa: S608
    " WHERE run_id = ANY(CAST(:run_ids AS text[])) ORDER BY run_id FOR UPDATE),"
    f" room AS (UPDATE {SCHEMA}.accounts SET reserved = reserved + CAST(:total AS bigint)"
    " WHERE user_id = :user_id AND balance - reserved >= CAST(:total AS bigint) AND (SELECT count(*) FROM prior) >= 0"
    " RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.reservations (id, run_id, user_id, remaining, expected_calls, expires_at, created_at)"
    " SELECT v.rid, v.run_id, room.user_id, v.cost, NULL, :expires, :now FROM room,"
    " unnest(CAST(:rids AS text[]), CAST(:run_ids AS text[]), CAST(:costs AS bigint[])) AS v(rid, run_id, cost)"
    " ORDER BY v.run_id"
    " ON CONFLICT (run_id) DO UPDATE SET remaining = reservations.remaining + EXCLUDED.remaining,"
    " expires_at = EXCLUDED.expires_at RETURNING run_id, id"
)

#: Open the missing accounts and write their start entries, in one statement. ON CONFLICT DO NOTHING
#: takes no lock on an account that exists.
ENSURE_ACCOUNTS = text(
    f"WITH new AS (INSERT INTO {SCHEMA}.accounts (user_id, balance, reserved, created_at)"  # noqa: S608
    " SELECT u, CAST(:start AS bigint), 0, CAST(:now AS timestamptz) FROM unnest(CAST(:uids AS text[])) AS u"
    " ORDER BY u ON CONFLICT (user_id) DO NOTHING RETURNING user_id)"
    f" INSERT INTO {SCHEMA}.ledger (user_id, kind, amount, balance_after, estimated, created_at)"
    " SELECT user_id, 'start', CAST(:start AS bigint), CAST(:start AS bigint), false, CAST(:now AS timestamptz)"
    " FROM new WHERE CAST(:start AS bigint) <> 0 ORDER BY user_id"
)

#: A batch's reservations, locked in run order (every path locks reservations in this order).
LOCK_RESERVATIONS = text(
    f"SELECT run_id, user_id, remaining, expected_calls FROM {SCHEMA}.reservations"  # noqa: S608
    " WHERE run_id = ANY(CAST(:runs AS text[])) ORDER BY run_id FOR UPDATE"
)

#: The ledger's entries of a batch's runs: the duplicate pre-check and the call counts in one read
#: (an index range per run on the unique (run_id, call_index) index).
LEDGER_KEYS = text(
    f"SELECT run_id, call_index FROM {SCHEMA}.ledger WHERE run_id = ANY(CAST(:runs AS text[]))"  # noqa: S608
)

#: A batch's settled reservations (what remains of each, and its call count once closed), in one statement.
UPDATE_RESERVATIONS = text(
    f"UPDATE {SCHEMA}.reservations AS r SET remaining = v.remaining, expected_calls = v.calls"  # noqa: S608
    " FROM unnest(CAST(:runs AS text[]), CAST(:remaining AS bigint[]), CAST(:calls AS int[]))"
    " AS v(run_id, remaining, calls) WHERE r.run_id = v.run_id"
)

#: Settled reservations past their expiry, deleted: those of closed runs (their call count is known
#: and every call is in), and those released by the sweep (abandoned runs) a day after. Nothing reads
#: them any more — a late record of their run is charged as any run's without a hold, as it would be
#: against nothing left — and kept they would grow the table, and the expiry sweep's index range, by
#: one row per run for ever. A run still open whose hold is spent keeps it (it may still extend it).
#: A bounded batch per statement; rows another transaction holds are left for the next.
PRUNE_SETTLED = text(
    f"DELETE FROM {SCHEMA}.reservations WHERE id IN (SELECT id FROM {SCHEMA}.reservations"  # noqa: S608
    " WHERE expires_at < :now AND remaining = 0 AND (expected_calls IS NOT NULL OR expires_at < :abandoned)"
    " ORDER BY expires_at LIMIT :limit FOR UPDATE SKIP LOCKED)"
)

#: Expired reservations given up (their runs were abandoned).
RELEASE_RESERVATIONS = text(
    f"UPDATE {SCHEMA}.reservations SET remaining = 0 WHERE id = ANY(CAST(:ids AS text[]))"  # noqa: S608
)

#: Every affected account in one statement: balance += delta, reserved -= released. ``locked`` takes
#: the row locks in user id order (LockRows above the sort) before any row is updated, so concurrent
#: billing replicas never deadlock; the UPDATE only touches rows that ``locked`` already holds.
MOVE_ACCOUNTS = text(
    "WITH v AS (SELECT * FROM unnest(CAST(:uids AS text[]), CAST(:deltas AS bigint[]),"  # noqa: S608
    " CAST(:released AS bigint[])) AS v(user_id, delta, released)),"
    f" locked AS MATERIALIZED (SELECT user_id FROM {SCHEMA}.accounts"
    " WHERE user_id = ANY(CAST(:uids AS text[])) ORDER BY user_id FOR UPDATE)"
    f" UPDATE {SCHEMA}.accounts AS a SET balance = a.balance + v.delta, reserved = a.reserved - v.released"
    " FROM v JOIN locked AS l ON l.user_id = v.user_id WHERE a.user_id = v.user_id"
    " RETURNING a.user_id, a.balance"
)

#: The usage entry's columns that vary per row, with their PostgreSQL array types.
USAGE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("user_id", "text"),
    ("amount", "bigint"),
    ("balance_after", "bigint"),
    ("run_id", "text"),
    ("call_index", "int"),
    ("agent_id", "text"),
    ("conversation_id", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("price_key", "text"),
    ("input_tokens", "bigint"),
    ("cache_write_tokens", "bigint"),
    ("cache_read_tokens", "bigint"),
    ("output_tokens", "bigint"),
    ("reasoning_tokens", "bigint"),
    ("input_price", "bigint"),
    ("output_price", "bigint"),
    ("cache_write_price", "bigint"),
    ("cache_read_price", "bigint"),
    ("context", "text"),
    ("estimated", "boolean"),
    ("note", "text"),
)
_USAGE_NAMES = ", ".join(c for c, _ in USAGE_COLUMNS)

#: A batch's usage entries in one statement, in batch order (``seq`` follows it, as ``balance_after`` does).
INSERT_USAGE = text(
    f"INSERT INTO {SCHEMA}.ledger (kind, created_at, {_USAGE_NAMES})"  # noqa: S608
    f" SELECT 'usage', CAST(:now AS timestamptz), {', '.join('e.' + c for c, _ in USAGE_COLUMNS)}"
    f" FROM unnest({', '.join(f'CAST(:{c} AS {t}[])' for c, t in USAGE_COLUMNS)})"
    f" WITH ORDINALITY AS e({_USAGE_NAMES}, ord) ORDER BY e.ord"
    " ON CONFLICT (run_id, call_index) DO NOTHING RETURNING run_id"
)
