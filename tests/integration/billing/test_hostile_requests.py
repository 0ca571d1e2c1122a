"""Billing's request/reply handlers against the worst inputs: every request gets a prompt answer — a
400 for a bad one, never a 500, never silence — and billing stays up for everyone else."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import update

from billing.app import BillingApp
from billing.db import accounts
from contracts import Subjects

from .helpers import Books, admit

pytestmark = pytest.mark.integration

PROMPT = 5.0  # seconds: every answer comes well within it


async def ask(nc: Any, subject: str, body: dict[str, Any] | bytes) -> dict[str, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = await nc.request(subject, data, timeout=PROMPT)
    return json.loads(reply.data)


def admission(**over: Any) -> dict[str, Any]:
    return {
        "run_id": "run_1",
        "user_id": "u",
        "agent_id": "a",
        "provider": "openai",
        "model": "gpt-4o",
        "prompt_tokens": 10,
        "max_output_tokens": 10,
        **over,
    }


def status(reply: dict[str, Any]) -> int | None:
    return (reply.get("error") or {}).get("status")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"\xff\x00 not json", None),
        (b"[" * 100_000, None),
        (b'{"run_id": "r", "user_id": "u", "prompt_tokens": ' + b"9" * 5000 + b"}", None),
        (admission(user_id="u" * 65), "user_id"),
        (admission(user_id="evil\u0000"), "user_id"),
        (admission(run_id="r" * 100_000, announce=True), "run_id"),  # as a subject it would cut billing's connection
        (admission(run_id="run with spaces", announce=True), "run_id"),
        (admission(run_id="run.*.>", announce=True), "run_id"),
        (admission(run_id="", announce=True), "run_id"),
        (admission(prompt_tokens=10**30), "max_output_tokens"),
        (admission(max_output_tokens=2**62), "max_output_tokens"),
    ],
)
async def test_a_bad_admission_is_a_400_and_reserves_nothing(
    billing: BillingApp, nats_client: Any, namespace: str, books: Books, body: dict[str, Any] | bytes, param: str | None
) -> None:
    s = Subjects(namespace)
    reply = await ask(nats_client, s.billing_admit, body)
    assert reply["admitted"] is False and status(reply) == 400
    assert reply["error"]["param"] == param and len(reply["error"]["message"]) <= 500
    # billing still answers, on the same connection, and the refused request held nothing
    assert (await admit(nats_client, s, "after", "someone")).error is not None  # 402: a start balance of 0
    if isinstance(body, dict) and await _has_account(books, "u"):
        assert (await books.account("u"))[1] == 0


async def _has_account(books: Books, user: str) -> bool:
    try:
        await books.account(user)
    except Exception:  # no such account: nothing was opened for it
        return False
    return True


async def test_prefetch_extend_and_balance_refuse_what_no_column_holds(
    billing: BillingApp, nats_client: Any, namespace: str
) -> None:
    s = Subjects(namespace)
    prefetch = {k: v for k, v in admission().items() if k != "run_id"}
    bad_run = await ask(nats_client, s.billing_prefetch, {**prefetch, "run_ids": ["ok", "nul\u0000"]})
    assert status(bad_run) == 400 and bad_run["error"]["param"] == "run_ids"
    bad_user = await ask(nats_client, s.billing_prefetch, {**prefetch, "user_id": "x" * 1000, "run_ids": ["a"]})
    assert status(bad_user) == 400
    # a cost no balance could hold ten times over: refused like any unaffordable prefetch, not an error
    big = await ask(nats_client, s.billing_prefetch, {**prefetch, "max_output_tokens": 10**11, "run_ids": ["a"]})
    assert big["reservations"] == {} and big["error"] is None
    huge = await ask(nats_client, s.billing_prefetch, {**prefetch, "max_output_tokens": 10**17, "run_ids": ["a"]})
    assert status(huge) == 400  # beyond any balance at all, as for an admission
    # a deadline without a time zone cannot be compared with billing's clock: a 400, not a 500
    naive = await ask(
        nats_client, s.billing_prefetch, {**prefetch, "run_ids": ["a"], "answer_by": "2030-01-01T00:00:00"}
    )
    assert status(naive) == 400 and naive["reservations"] == {}

    extend = {**admission(), "reservation_id": "resv_\u0000"}
    assert status(await ask(nats_client, s.billing_extend, extend)) == 400
    assert status(await ask(nats_client, s.billing_extend, {**admission(), "reservation_id": "r" * 65})) == 400

    assert status(await ask(nats_client, s.billing_balance, {"user_id": "\u0000"})) == 400
    assert status(await ask(nats_client, s.billing_balance, {"user_id": "u" * 65})) == 400
    assert status(await ask(nats_client, s.billing_balance, b"null")) == 400
    ok = await ask(nats_client, s.billing_balance, {"user_id": "u" * 64})
    assert ok["error"] is None and ok["user_id"] == "u" * 64


@pytest.mark.parametrize(
    ("op", "kw", "expected"),
    [
        ("balance.get", {"params": {"user_id": "u" * 65}}, 400),
        ("balance.get", {"params": {"user_id": "nul\u0000"}}, 400),
        ("credits.add", {"params": {"user_id": "u"}, "body": {"amount": "1e999999"}}, 400),
        ("credits.add", {"params": {"user_id": "u"}, "body": {"amount": "9" * 100_000}}, 400),
        ("credits.add", {"params": {"user_id": "u"}, "body": {"amount": 10**30}}, 400),
        ("credits.add", {"params": {"user_id": "u"}, "body": {"amount": "1", "note": "a\u0000b"}}, 400),
        ("credits.add", {"params": {"user_id": "u" * 65}, "body": {"amount": "1"}}, 400),
        ("ledger.list", {"params": {"user_id": "u"}, "query": {"after": "le_" + "9" * 30}}, 404),
        ("ledger.list", {"params": {"user_id": "u"}, "query": {"after": "le_²"}}, 404),
        ("ledger.list", {"params": {"user_id": "u"}, "query": {"limit": "9" * 5000}}, 400),
        ("ledger.list", {"params": {"user_id": "u"}, "query": {"run_id": "r\u0000"}}, 400),
        ("pricing.put", {"params": {"model_key": "m" * 201}, "body": {"input": "1", "output": "1"}}, 400),
        ("pricing.put", {"params": {"model_key": "m\u0000"}, "body": {"input": "1", "output": "1"}}, 400),
        ("pricing.put", {"params": {"model_key": "m"}, "body": {"input": "1e30", "output": "1"}}, 400),
    ],
)
async def test_a_bad_admin_request_is_answered_with_its_error(
    billing: BillingApp, nats_client: Any, namespace: str, op: str, kw: dict[str, Any], expected: int
) -> None:
    s = Subjects(namespace)
    reply = await ask(nats_client, s.billing_admin, {"op": op, **kw})
    assert reply["status"] == expected and reply["error"]["status"] == expected
    assert len(reply["error"]["message"]) <= 500


async def test_a_credit_beyond_what_a_balance_holds_is_a_400(
    billing: BillingApp, nats_client: Any, namespace: str, books: Books
) -> None:
    """A balance at the top of a BIGINT: the next credit is refused by the database itself — the
    handler's backstop answers 400, not 500, and the balance is untouched."""
    s = Subjects(namespace)
    opened = await ask(
        nats_client, s.billing_admin, {"op": "credits.add", "params": {"user_id": "rich"}, "body": {"amount": "1"}}
    )
    assert opened["status"] == 201
    async with books.engine.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.user_id == "rich").values(balance=2**63 - 1))
    more = await ask(
        nats_client, s.billing_admin, {"op": "credits.add", "params": {"user_id": "rich"}, "body": {"amount": "1"}}
    )
    assert more["status"] == 400 and more["error"]["type"] == "invalid_request_error"
    assert (await books.account("rich"))[0] == 2**63 - 1


async def test_bad_admissions_in_one_users_burst_refuse_only_themselves(
    billing: BillingApp, nats_client: Any, namespace: str, books: Books
) -> None:
    """A burst of one user's admissions goes to PostgreSQL together (billing.admitpath): the bad ones
    among them are refused on their own, and every good one is admitted."""
    s = Subjects(namespace)
    await ask(
        nats_client, s.billing_admin, {"op": "credits.add", "params": {"user_id": "u"}, "body": {"amount": "100000"}}
    )
    bad = [admission(run_id=f"bad-{i}", prompt_tokens=10**30) for i in range(5)]
    bad += [admission(run_id=f"bad\u0000{i}") for i in range(5)]
    good = [admission(run_id=f"good-{i}") for i in range(30)]
    bodies = [b for pair in zip(good, bad + [None] * len(good), strict=False) for b in pair if b is not None]
    replies = await asyncio.gather(*(ask(nats_client, s.billing_admit, b) for b in bodies))
    outcome = {b["run_id"]: r for b, r in zip(bodies, replies, strict=True)}
    assert all(outcome[b["run_id"]]["admitted"] for b in good)
    assert all(status(outcome[b["run_id"]]) == 400 for b in bad)
    assert len({outcome[b["run_id"]]["reservation_id"] for b in good}) == len(good)
