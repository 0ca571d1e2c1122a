"""Tables and migrations. Every table lives in PostgreSQL schema ``billing``.

Money columns are BIGINT micro-credits (see :mod:`billing.money`); token counts are BIGINT too (a
provider may report more than an INTEGER holds, and a token is never dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from servicekit import db as sdb

SCHEMA = "billing"
MIGRATION_LOCK_ID = 0x5B_B111_106

metadata = MetaData(schema=SCHEMA)

accounts = Table(
    "accounts",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("balance", BigInteger, nullable=False),
    Column("reserved", BigInteger, nullable=False),
    Column("last_refill_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=True),
    Column("user_id", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=True),
    Column("run_id", String(128), nullable=True),
    Column("call_index", Integer, nullable=True),
    Column("agent_id", String(64), nullable=True),
    Column("conversation_id", String(200), nullable=True),
    Column("provider", String(32), nullable=True),
    Column("model", String(200), nullable=True),
    Column("price_key", String(200), nullable=True),
    Column("input_tokens", BigInteger, nullable=True),
    Column("cache_write_tokens", BigInteger, nullable=True),
    Column("cache_read_tokens", BigInteger, nullable=True),
    Column("output_tokens", BigInteger, nullable=True),
    Column("reasoning_tokens", BigInteger, nullable=True),
    Column("input_price", BigInteger, nullable=True),
    Column("output_price", BigInteger, nullable=True),
    Column("cache_write_price", BigInteger, nullable=True),
    Column("cache_read_price", BigInteger, nullable=True),
    Column("context", String(16), nullable=True),
    Column("estimated", Boolean, nullable=False, default=False),
    Column("note", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # One entry per model call, whatever is redelivered or re-published.
    UniqueConstraint("run_id", "call_index", name="uq_ledger_call"),
    Index("ix_ledger_user", "user_id", "seq"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("run_id", String(128), nullable=False, unique=True),
    Column("user_id", String(64), nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("expected_calls", Integer, nullable=True),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_reservations_expiry", "expires_at"),
)

prices = Table(
    "prices",
    metadata,
    Column("model_key", String(200), primary_key=True),
    Column("input", BigInteger, nullable=False),
    Column("output", BigInteger, nullable=False),
    Column("cache_write", BigInteger, nullable=True),
    Column("cache_read", BigInteger, nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

#: Usage messages the ledger can never take (undecodable, or an identity or amount no column holds),
#: parked by the consumer so they block no one — and lose nothing: ``data`` is the message as sent.
#: The same stored message parked twice (its ack was lost) is one row.
usage_dead_letters = Table(
    "usage_dead_letters",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("stream", String(64), nullable=False),
    Column("stream_seq", BigInteger, nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of data, hex
    Column("subject", String(255), nullable=False),
    Column("msg_id", String(255), nullable=True),
    Column("deliveries", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("error", String(2000), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("stream", "stream_seq", "digest", name="uq_usage_dead_letter"),
)


#: PostgreSQL plans each of billing's statements for its own parameters (see :func:`open_engine`).
CUSTOM_PLANS = {"plan_cache_mode": "force_custom_plan"}


def open_engine(url: str, pool_size: int = 20) -> AsyncEngine:
    # No pre-ping: admission is on every request's path; after a database restart one statement
    # fails (the consumer retries its batch, an admission answers 503) and the pool reconnects.
    # No overflow: under a burst, admissions wait a moment for a pooled connection rather than
    # each opening (and then closing) one of its own, which costs far more than the wait.
    # Custom plans: the batch statements take lists of one to hundreds of runs, and a generic plan
    # cached while the tables were small (a sequential scan) would stay until they are next analysed —
    # never, where autovacuum is off — so that every batch read the whole ledger. Planning each
    # statement for its own values and the tables' current size costs tens of microseconds.
    return sdb.create_engine(url, pre_ping=False, pool_size=pool_size, max_overflow=0, server_settings=CUSTOM_PLANS)


async def migrate(url: str) -> None:
    await sdb.migrate(
        url, schema=SCHEMA, script_location=Path(__file__).parent / "migrations", lock_id=MIGRATION_LOCK_ID
    )


async def wait_for_schema(url: str, report: Callable[[str | None], None]) -> None:
    """Wait until another process (``python -m billing migrate``, the chart's Job) has migrated the schema
    to the head this code needs; ``report`` gets what is missing meanwhile
    (see :func:`servicekit.db.wait_for_schema`)."""
    await sdb.wait_for_schema(url, schema=SCHEMA, script_location=Path(__file__).parent / "migrations", report=report)
