"""Hostile usage records on the real PostgreSQL (issue #8): no single message may stop billing.

Records are published straight onto the USAGE stream, with ``Nats-Msg-Id`` as the runner does,
interleaved with good records of other users. Every wait polls the database with a timeout.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select

import billing.ledger.usage
from billing.app import BillingApp
from billing.db import ledger, usage_dead_letters
from billing.settings import BillingSettings
from contracts import RunClosed, Subjects
from devstack.procs import free_port
from servicekit import natsio

from .helpers import Books, usage, wait_for

pytestmark = pytest.mark.integration

IN, OUT = 2_500_000, 10_000_000  # gpt-4o, µcr per token
PROMPTLY = 20.0  # seconds: a batch is applied in well under one; today's code never gets there


def raw(run: str, user: str, **fields: Any) -> tuple[str, bytes]:
    """A usage record's wire bytes with ``fields`` set as they are — past any validation of the model."""
    tokens = fields.pop("usage", {})
    body = usage(run, 0, user=user).model_dump(mode="json")
    body["usage"].update(tokens)
    body.update(fields)
    return f"{run}:0", json.dumps(body).encode()


async def publish_raw(nc: Any, subject: str, msg_id: str, data: bytes) -> int:
    """Publish as the runner does; returns the stream sequence."""
    ack = await nc.jetstream().publish(subject, data, headers={"Nats-Msg-Id": msg_id})
    return int(ack.seq)


def good(n: int, tag: str) -> list[tuple[str, bytes]]:
    return [raw(f"{tag}_{i}", f"user_{i % 5}", usage={"input_tokens": 100 + i, "output_tokens": 10}) for i in range(n)]


def good_cost(n: int) -> int:
    return sum((100 + i) * IN + 10 * OUT for i in range(n))


async def entry(books: Books, run: str) -> Any:
    async with books.engine.connect() as conn:
        return (await conn.execute(select(ledger).where(ledger.c.run_id == run))).one_or_none()


async def dead_letters(books: Books) -> list[Any]:
    async with books.engine.connect() as conn:
        q = select(usage_dead_letters).order_by(usage_dead_letters.c.stream_seq)
        return list(await conn.execute(q))


async def dead_letter_count(books: Books) -> int:
    async with books.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_dead_letters))).scalar_one())


def metric() -> float:
    return REGISTRY.get_sample_value("billing_usage_dead_letters_total") or 0.0


async def test_faulty_metadata_is_billed_cleaned_and_holds_no_one_up(
    billing: BillingApp, nats_client: Any, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    faulty = [
        raw("m_long", "mallory", conversation_id="c" * 201),
        raw("m_nul", "mallory", conversation_id="conv\u0000ersation", agent_id="agent\u0000"),
        raw("m_huge", "mallory", usage={"input_tokens": 3_000_000_000, "output_tokens": 5_000_000_000}),
        raw("m_model", "mallory", model="gpt-4o" + "x" * 300, conversation_id="\u0000" * 500),
    ]
    records = good(40, "g")
    for i, bad in enumerate(faulty):  # each faulty record among good ones of other users
        records.insert(10 * i + 5, bad)
    for msg_id, data in records:
        await publish_raw(nats_client, s.usage_recorded, msg_id, data)

    await wait_for(lambda: books.has(len(records)), timeout=PROMPTLY)

    long_, nul, huge, model = [await entry(books, r) for r in ("m_long", "m_nul", "m_huge", "m_model")]
    assert long_.conversation_id == "c" * 200 and "conversation_id" in long_.note
    assert (nul.conversation_id, nul.agent_id) == ("conversation", "agent")
    assert nul.note == "metadata cleaned to fit the ledger: agent_id, conversation_id"
    assert (huge.input_tokens, huge.output_tokens) == (3_000_000_000, 5_000_000_000)  # BIGINT: no token dropped
    assert huge.amount == -(3_000_000_000 * IN + 5_000_000_000 * OUT) and huge.note is None
    assert model.model == ("gpt-4o" + "x" * 300)[:200] and model.conversation_id == "" and model.price_key == "gpt-4o"
    for row in (long_, nul, model):
        assert row.amount == -(1000 * IN + 500 * OUT)  # the money, exactly as for a clean record

    balance, _, total = await books.account("mallory")
    assert balance == total == -(3 * (1000 * IN + 500 * OUT) + 3_000_000_000 * IN + 5_000_000_000 * OUT)
    assert await books.usage_spent() == good_cost(40) - sum(r.amount for r in (long_, nul, huge, model))
    for u in range(5):
        balance, reserved, total = await books.account(f"user_{u}")
        assert balance == total and reserved == 0
    assert await dead_letter_count(books) == 0
    assert billing.consumer is not None and not billing.consumer.crashed


async def test_what_the_ledger_can_never_take_is_parked_reported_and_usage_keeps_flowing(
    billing_settings: Callable[..., BillingSettings], nats_client: Any, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await natsio.ensure_streams(nats_client.jetstream(), s)
    port = free_port()
    before = metric()
    close = RunClosed(run_id="c_long", user_id="u" * 65, calls=1, status="completed").model_dump_json().encode()
    poison = [
        (s.usage_recorded, *raw("p_user", "u" * 65)),  # no account id holds it
        (s.usage_recorded, *raw("p_nul_user", "evil\u0000")),
        (s.usage_recorded, *raw("p_tokens", "mallory", usage={"output_tokens": 2**63})),  # beyond a BIGINT
        (s.usage_recorded, "p_json:0", b'{"run_id": "p_json", "call_index": 0, "user_id": '),  # not JSON
        (s.usage_recorded, "p_model:0", b'{"run_id": "p_model", "call_index": 0}'),  # JSON, not the model
        (s.usage_run_closed, "c_long:closed", close),
    ]
    records = good(30, "g")
    app = BillingApp(billing_settings(health_port=port, health_host="127.0.0.1"))
    async with app.running():
        sent: dict[int, bytes] = {}
        for i, (msg_id, data) in enumerate(records):
            await publish_raw(nats_client, s.usage_recorded, msg_id, data)
            if i % 5 == 2:
                subject, pid, pdata = poison[i // 5]
                sent[await publish_raw(nats_client, subject, pid, pdata)] = pdata

        await wait_for(lambda: books.has(30), timeout=PROMPTLY)
        await wait_for(lambda: _equals(dead_letter_count(books), len(poison)), timeout=PROMPTLY)
        parked = await dead_letters(books)
        assert {row.stream_seq: bytes(row.data) for row in parked} == sent  # the message, as sent
        errors = {row.msg_id: row.error for row in parked}
        assert "user_id is 65 characters" in errors["p_user:0"]
        assert "user_id holds a character" in errors["p_nul_user:0"]
        assert "output_tokens" in errors["p_tokens:0"]
        assert errors["p_json:0"].startswith("undecodable") and errors["p_model:0"].startswith("undecodable")
        assert "user_id is 65 characters" in errors["c_long:closed"]
        assert {row.subject for row in parked} == {s.usage_recorded, s.usage_run_closed}
        assert await entry(books, "p_nul_user") is None and await entry(books, "p_tokens") is None

        assert metric() == before + len(poison)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200  # billing still works for everyone else
            assert ready.json()["status"] == "degraded" and ready.json()["dead_letters"] == len(poison)
            assert "billing_usage_dead_letters_total" in (await http.get("/metrics")).text

        later = good(20, "later")
        for msg_id, data in later:
            await publish_raw(nats_client, s.usage_recorded, msg_id, data)
        await wait_for(lambda: books.has(50), timeout=PROMPTLY)
        assert await books.usage_spent() == good_cost(30) + good_cost(20)
        assert await dead_letter_count(books) == len(poison)
        assert app.consumer is not None and not app.consumer.crashed


async def test_what_postgres_refuses_on_its_own_is_isolated_from_its_batch(
    billing_settings: Callable[..., BillingSettings],
    nats_client: Any,
    namespace: str,
    books: Books,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The safety net under the checks: with the ledger's metadata cleaning switched off, PostgreSQL
    itself refuses the records (VARCHAR(200), NUL, a balance beyond a BIGINT). Published before billing
    starts, they share a batch with good records: the batch is applied in parts, the good records
    committed, the refused ones parked."""
    monkeypatch.setattr(billing.ledger.usage, "clean_row", lambda row: row)
    s = Subjects(namespace)
    await natsio.ensure_streams(nats_client.jetstream(), s)
    whale = {"input_tokens": 2_000_000_000_000}  # 5 x 10^18 µcr: one fits a balance, two do not
    refused = [
        raw("r_long", "mallory", conversation_id="c" * 201),
        raw("r_nul", "mallory", conversation_id="a\u0000b"),
        raw("r_whale_2", "whale", usage=whale),
    ]
    records = good(60, "g")
    records.insert(7, refused[0])
    records.insert(30, raw("r_whale_1", "whale", usage=whale))
    records.insert(31, refused[1])
    records.insert(50, refused[2])
    for msg_id, data in records:
        await publish_raw(nats_client, s.usage_recorded, msg_id, data)

    async with BillingApp(billing_settings()).running() as app:
        await wait_for(lambda: books.has(61), timeout=PROMPTLY)
        await wait_for(lambda: _equals(dead_letter_count(books), 3), timeout=PROMPTLY)
        parked = await dead_letters(books)
        assert sorted(row.msg_id for row in parked) == ["r_long:0", "r_nul:0", "r_whale_2:0"]
        assert all(row.error.startswith("refused by the database") for row in parked)
        assert "0x00" in next(row.error for row in parked if row.msg_id == "r_nul:0")
        whale_cost = 2_000_000_000_000 * IN + 500 * OUT
        assert (await entry(books, "r_whale_1")).amount == -whale_cost
        assert await books.usage_spent() == good_cost(60) + whale_cost
        for u in ("whale", "user_0", "user_1"):
            balance, _, total = await books.account(u)
            assert balance == total
        assert app.consumer is not None and not app.consumer.crashed


async def _equals(value: Any, expected: int) -> bool:
    return await value == expected


async def test_huge_token_counts_are_billed_and_the_unappliable_parked(
    billing_settings: Callable[..., BillingSettings], nats_client: Any, namespace: str, books: Books
) -> None:
    """The migration's BIGINT token columns and the dead-letter table, on their own."""
    s = Subjects(namespace)
    async with BillingApp(billing_settings()).running() as app:
        await publish_raw(nats_client, s.usage_recorded, *raw("huge", "u", usage={"output_tokens": 2**35}))
        await publish_raw(nats_client, s.usage_recorded, *raw("nul", "u", conversation_id="x\u0000" * 150))
        await publish_raw(nats_client, s.usage_recorded, "bad:0", b"\x00not json")
        await wait_for(lambda: books.has(2))
        await wait_for(lambda: _equals(dead_letter_count(books), 1))
        assert (await entry(books, "huge")).output_tokens == 2**35
        assert (await entry(books, "nul")).conversation_id == "x" * 150
        assert bytes((await dead_letters(books))[0].data) == b"\x00not json"
        assert app.consumer is not None and not app.consumer.crashed
