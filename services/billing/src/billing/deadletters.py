"""Parked usage messages: what the ledger can never take, kept whole so that nothing is lost.

A usage message that does not decode, or whose identity or amounts no ledger column can hold (see
:mod:`billing.sanitize`), or that the database refuses on its own (a data error, see
:mod:`billing.faults`) is written to ``usage_dead_letters`` with its raw bytes, then terminated on
JetStream: it blocks no one, and an operator can read, fix and re-publish it. Its money is NOT
billed until then — every parked message is an alert (the ``billing_usage_dead_letters_total``
metric, and ``dead_letters`` in ``/readyz``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from sqlalchemy import String, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from .db import usage_dead_letters as table
from .sanitize import clean_text

#: The text columns' widths.
_W: dict[str, int] = {c.name: c.type.length for c in table.c if isinstance(c.type, String) and c.type.length}


@dataclass(frozen=True)
class DeadLetter:
    """One message to park, and why."""

    stream: str
    stream_seq: int
    subject: str
    msg_id: str | None
    deliveries: int
    data: bytes
    error: str

    @classmethod
    def of(cls, msg: Msg, error: str) -> DeadLetter:
        md = msg.metadata
        headers = msg.headers or {}
        return cls(
            stream=md.stream,
            stream_seq=md.sequence.stream,
            subject=msg.subject,
            msg_id=headers.get("Nats-Msg-Id"),
            deliveries=md.num_delivered,
            data=bytes(msg.data),
            error=error,
        )

    def row(self, now: datetime) -> dict[str, object]:
        """The table row: every text cleaned to fit (a header or an error message may hold anything)."""
        return {
            "stream": clean_text(self.stream, _W["stream"]),
            "stream_seq": self.stream_seq,
            "digest": hashlib.sha256(self.data).hexdigest(),
            "subject": clean_text(self.subject, _W["subject"]),
            "msg_id": None if self.msg_id is None else clean_text(self.msg_id, _W["msg_id"]),
            "deliveries": min(self.deliveries, 2**31 - 1),
            "data": self.data,
            "error": clean_text(self.error, _W["error"]),
            "created_at": now,
        }


class DeadLetters:
    """The ``usage_dead_letters`` table over one engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def park(self, letters: Sequence[DeadLetter]) -> int:
        """Write ``letters`` in one transaction; returns how many were new (a re-park is a no-op)."""
        if not letters:
            return 0
        now = datetime.now(UTC)
        stmt = (
            insert(table)
            .values([letter.row(now) for letter in letters])
            .on_conflict_do_nothing(index_elements=["stream", "stream_seq", "digest"])
            .returning(table.c.id)
        )
        async with self.engine.begin() as conn:
            return len((await conn.execute(stmt)).all())

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
