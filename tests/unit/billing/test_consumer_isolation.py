"""The consumer's handling of one batch, with fake messages and a fake ledger: no single message may
stop it. A data error isolates the record at fault (in halves), a database outage retries the whole
batch, what can never be applied is parked."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from billing.consumer import DEAD_LETTERS, UsageConsumer
from billing.deadletters import DeadLetter
from contracts import RunClosed, Subjects, TokenUsage, UsageRecorded

pytestmark = pytest.mark.unit

SUBJECTS = Subjects("unit")


@dataclass
class FakeMsg:
    subject: str
    data: bytes
    seq: int
    settled: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Nats-Msg-Id": f"id-{self.seq}"}

    @property
    def metadata(self) -> Any:
        return SimpleNamespace(stream="unit_USAGE", sequence=SimpleNamespace(stream=self.seq), num_delivered=1)

    async def ack(self) -> None:
        self.settled.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.settled.append("nak")

    async def term(self) -> None:
        self.settled.append("term")


def usage_msg(seq: int, user: str = "u", **over: Any) -> FakeMsg:
    values: dict[str, Any] = {
        "run_id": f"run_{seq}",
        "call_index": 0,
        "user_id": user,
        "agent_id": "a",
        "provider": "openai",
        "model": "gpt-4o",
        "usage": TokenUsage(input_tokens=1),
        **over,
    }
    r = UsageRecorded(**values)
    return FakeMsg(SUBJECTS.usage_recorded, r.model_dump_json().encode(), seq)


def data_error() -> sa_exc.DBAPIError:
    orig = asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00')
    return sa_exc.DBAPIError("INSERT ...", {}, orig)


class FakeLedger:
    """Fails any batch holding a poisoned run (as PostgreSQL would), else "commits" it."""

    def __init__(self, poisoned: set[str], error: Exception | None = None) -> None:
        self.poisoned = poisoned
        self.error = error or data_error()
        self.calls: list[int] = []
        self.committed: list[str] = []
        self.parked: list[DeadLetter] = []

    async def apply(self, records: list[UsageRecorded], closes: list[RunClosed]) -> int:
        self.calls.append(len(records) + len(closes))
        if any(r.run_id in self.poisoned for r in records):
            raise self.error
        self.committed += [r.run_id for r in records]
        return len(records)

    async def park(self, letters: list[DeadLetter]) -> int:
        self.parked += letters
        return len(letters)


def consumer(ledger: FakeLedger) -> UsageConsumer:
    return UsageConsumer(None, SUBJECTS, ledger.apply, ledger.park, retry_delay_s=0.001)  # type: ignore[arg-type]


async def test_a_happy_batch_is_one_transaction() -> None:
    ledger = FakeLedger(set())
    msgs = [usage_msg(i) for i in range(50)]
    await consumer(ledger)._handle(msgs)  # type: ignore[arg-type]
    assert ledger.calls == [50]
    assert all(m.settled == ["ack"] for m in msgs)


async def test_a_record_the_database_refuses_is_isolated_and_parked_the_rest_committed() -> None:
    ledger = FakeLedger({"run_13"})
    c = consumer(ledger)
    msgs = [usage_msg(i) for i in range(64)]
    before = DEAD_LETTERS._value.get()
    await c._handle(msgs)  # type: ignore[arg-type]
    assert sorted(ledger.committed) == sorted(f"run_{i}" for i in range(64) if i != 13)
    assert [m.settled for m in msgs if m.seq != 13] == [["ack"]] * 63
    assert msgs[13].settled == ["term"]
    [letter] = ledger.parked
    assert letter.stream_seq == 13 and letter.data == msgs[13].data and letter.msg_id == "id-13"
    assert "refused by the database" in letter.error and "0x00" in letter.error
    assert c.parked == 1 and DEAD_LETTERS._value.get() == before + 1
    assert len(ledger.calls) <= 1 + 2 * 6 + 1  # halving: about log2(64) more transactions


async def test_several_bad_records_cost_a_few_transactions_each() -> None:
    ledger = FakeLedger({"run_0", "run_500", "run_999"})
    msgs = [usage_msg(i) for i in range(1000)]
    await consumer(ledger)._handle(msgs)  # type: ignore[arg-type]
    assert len(ledger.committed) == 997
    assert sorted(letter.stream_seq for letter in ledger.parked) == [0, 500, 999]
    assert len(ledger.calls) < 70


async def test_a_database_outage_naks_the_whole_batch_and_parks_nothing() -> None:
    outage = sa_exc.DBAPIError("INSERT ...", {}, asyncpg.exceptions.AdminShutdownError("terminating connection"))
    ledger = FakeLedger({"run_3"}, outage)
    msgs = [usage_msg(i) for i in range(8)] + [FakeMsg(SUBJECTS.usage_recorded, b"not json", 99)]
    await consumer(ledger)._handle(msgs)  # type: ignore[arg-type]
    assert ledger.calls == [8] and not ledger.parked
    assert all(m.settled == ["nak"] for m in msgs)


async def test_an_outage_met_while_isolating_naks_only_what_was_not_committed() -> None:
    ledger = FakeLedger({"run_7"})
    real = ledger.apply
    outage = ConnectionRefusedError(111, "Connect call failed")

    async def fail_after_two(records: list[UsageRecorded], closes: list[RunClosed]) -> int:
        if len(ledger.calls) >= 2:  # the whole batch failed, its first half committed; then PostgreSQL went away
            ledger.calls.append(-1)
            raise outage
        return await real(records, closes)

    ledger.apply = fail_after_two  # type: ignore[method-assign]
    msgs = [usage_msg(i) for i in range(8)]
    await consumer(ledger)._handle(msgs)  # type: ignore[arg-type]
    assert [m.settled for m in msgs[:4]] == [["ack"]] * 4
    assert [m.settled for m in msgs[4:]] == [["nak"]] * 4
    assert not ledger.parked


async def test_an_unknown_error_of_one_record_naks_it_alone_never_parks_it() -> None:
    ledger = FakeLedger({"run_2"}, TypeError("a bug"))
    msgs = [usage_msg(i) for i in range(4)]
    await consumer(ledger)._handle(msgs)  # type: ignore[arg-type]
    assert msgs[2].settled == ["nak"] and not ledger.parked
    assert [m.settled for i, m in enumerate(msgs) if i != 2] == [["ack"]] * 3


async def test_what_can_never_be_applied_is_parked_before_the_batch_is_applied() -> None:
    ledger = FakeLedger(set())
    bad = [
        FakeMsg(SUBJECTS.usage_recorded, b"{not json", 100),
        FakeMsg(SUBJECTS.usage_recorded, b'{"run_id": "r"}', 101),
        FakeMsg(SUBJECTS.usage_recorded, b"\xff\xfe\x00", 102),
        usage_msg(103, user="u" * 65),
        usage_msg(104, user="nul\x00"),
        usage_msg(105, call_index=2**31),
        FakeMsg(SUBJECTS.usage_run_closed, b'{"run_id": "r", "user_id": "u", "calls": -1}', 106),
    ]
    good = [usage_msg(i) for i in range(5)]
    await consumer(ledger)._handle(good + bad)  # type: ignore[arg-type]
    assert ledger.calls == [5]
    assert all(m.settled == ["ack"] for m in good) and all(m.settled == ["term"] for m in bad)
    errors = {letter.stream_seq: letter.error for letter in ledger.parked}
    assert sorted(errors) == list(range(100, 107))
    assert errors[100].startswith("undecodable") and "user_id is 65 characters" in errors[103]


async def test_when_parking_fails_the_messages_come_back() -> None:
    ledger = FakeLedger(set())

    async def down(letters: list[DeadLetter]) -> int:
        raise ConnectionRefusedError(111, "Connect call failed")

    c = consumer(ledger)
    c.park = down
    msg = FakeMsg(SUBJECTS.usage_recorded, b"nope", 1)
    await c._handle([msg])  # type: ignore[list-item]
    assert msg.settled == ["nak"] and c.parked == 0
