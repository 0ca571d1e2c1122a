"""Admission, extension, settlement, expiry and the account policies, over NATS against PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from billing.app import BillingApp
from billing.settings import BillingSettings
from contracts import (
    BalanceReply,
    BalanceRequest,
    ExtendReply,
    ExtendRequest,
    PrefetchReply,
    PrefetchRequest,
    RunAdmitted,
    RunClosed,
    Subjects,
    TokenUsage,
)
from servicekit.natsio import flush_in_order

from .helpers import MICRO, Books, admin, admit, publish, usage, wait_for

pytestmark = pytest.mark.integration

RUN_WORST = 12_500  # gpt-4o, 1000 prompt × 2.5 + 1000 output × 10 credits


async def extend(nc, s: Subjects, run: str, rid: str, user: str) -> ExtendReply:  # type: ignore[no-untyped-def]
    req = ExtendRequest(
        run_id=run,
        reservation_id=rid,
        user_id=user,
        provider="openai",
        model="gpt-4o",
        prompt_tokens=1000,
        max_output_tokens=1000,
    )
    return ExtendReply.model_validate_json(
        (await nc.request(s.billing_extend, req.model_dump_json().encode(), timeout=5)).data
    )


async def test_ten_times_n_concurrent_admissions_admit_exactly_n(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s, n = Subjects(namespace), 5
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * n)})
    replies = await asyncio.gather(*(admit(nats_client, s, f"r{i}", "u") for i in range(10 * n)))
    assert sum(r.admitted for r in replies) == n
    assert all(
        r.error and r.error.status == 402 and r.error.type == "insufficient_quota" for r in replies if not r.admitted
    )
    balance, reserved, total = await books.account("u")
    assert balance == total == reserved == RUN_WORST * n * MICRO  # nothing left, nothing below zero


async def test_extend_grows_or_is_refused_and_unknown_is_404(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 2)})
    first = await admit(nats_client, s, "run", "u")
    assert first.admitted and first.reservation_id
    grown = await extend(nats_client, s, "run", first.reservation_id, "u")
    assert grown.ok and grown.reserved == RUN_WORST
    refused = await extend(nats_client, s, "run", first.reservation_id, "u")
    assert (
        not refused.ok and refused.error and refused.error.status == 402 and refused.error.code == "insufficient_quota"
    )
    unknown = await extend(nats_client, s, "run", "resv_nope", "u")
    assert not unknown.ok and unknown.error and unknown.error.status == 404
    assert (await books.account("u"))[1] == RUN_WORST * 2 * MICRO


async def extend_call(  # type: ignore[no-untyped-def]
    nc, s: Subjects, rid: str, prompt: int, out: int, calls: list[TokenUsage] | None
) -> ExtendReply:
    """Ask billing to cover a run's next gpt-4o call, as the runner does (``calls``: its earlier ones)."""
    req = ExtendRequest(
        run_id="run",
        reservation_id=rid,
        user_id="u",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=prompt,
        max_output_tokens=out,
        calls=calls,
    )
    return ExtendReply.model_validate_json(
        (await nc.request(s.billing_extend, req.model_dump_json().encode(), timeout=5)).data
    )


async def test_a_runs_own_hold_counts_toward_its_next_call(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    """A multi-step run's next call needs from the balance only what its worst case exceeds what the
    run still holds beyond its calls not yet billed; a call its hold and the balance together cannot
    cover is still refused, and nothing the run holds is ever lent to another admission."""
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST + 1_000)})
    first = await admit(nats_client, s, "run", "u")  # 12,500 held, 1,000 available
    assert first.admitted and first.reservation_id
    rid = first.reservation_id
    call0 = TokenUsage(input_tokens=10, output_tokens=10)  # 25 + 100 = 125 credits

    # Call 0 is not billed yet: its 125 stay owed by the hold, which covers 12,375 of call 1's 12,500.
    grown = await extend_call(nats_client, s, rid, 1000, 1000, [call0])
    assert grown.ok, grown.error
    assert grown.reserved == 125
    assert (await books.account("u"))[:2] == ((RUN_WORST + 1_000) * MICRO, (RUN_WORST + 125) * MICRO)

    # Once call 0 is billed, the hold is exactly call 1's worst case: nothing of it is free for others.
    await publish(nats_client, s, usage("run", 0, user="u", input_tokens=10, output_tokens=10))

    async def billed() -> bool:
        return (await books.account("u"))[1] == RUN_WORST * MICRO

    await wait_for(billed)
    other = await admit(nats_client, s, "other", "u", prompt=0, out=100)  # 1,000 credits; 875 available
    assert not other.admitted and other.error and other.error.status == 402

    # Call 2, of a worst case of 22,500 while call 1 (125) is unbilled: 12,375 held + 875 available.
    call1 = TokenUsage(input_tokens=10, output_tokens=10)
    refused = await extend_call(nats_client, s, rid, 1000, 2000, [call0, call1])
    assert not refused.ok and refused.error and refused.error.status == 402
    assert refused.error.code == "insufficient_quota"
    assert "up to 22500 credits and 13250 are available" in refused.error.message
    # Without the runner's account of its calls, the hold cannot count: 12,500 more than 875 available.
    blind = await extend_call(nats_client, s, rid, 1000, 1000, None)
    assert not blind.ok and blind.error and blind.error.status == 402
    # A call the hold covers whole takes nothing from the balance.
    small = await extend_call(nats_client, s, rid, 100, 100, [call0, call1])
    assert small.ok and small.reserved == 0
    balance, reserved, _ = await books.account("u")
    assert (balance, reserved) == ((RUN_WORST + 1_000 - 125) * MICRO, RUN_WORST * MICRO)


async def test_readmitting_a_run_grows_its_one_reservation(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": 100_000})
    a, b = await admit(nats_client, s, "same", "u"), await admit(nats_client, s, "same", "u")
    assert a.admitted and b.admitted and a.reservation_id == b.reservation_id
    assert (await books.account("u"))[1] == 2 * RUN_WORST * MICRO


async def test_settlement_waits_for_every_call_even_when_closed_first(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": 100_000})
    reply = await admit(nats_client, s, "run", "u")
    await publish(
        nats_client,
        s,
        RunClosed(run_id="run", user_id="u", reservation_id=reply.reservation_id, calls=2, status="completed"),
    )
    await publish(nats_client, s, usage("run", 0, user="u"))  # 7,500 credits

    async def reserved_is(value: int) -> bool:
        return (await books.account("u"))[1] == value

    await wait_for(lambda: reserved_is((RUN_WORST - 7_500) * MICRO))  # spent came out, the rest stays held
    await publish(nats_client, s, usage("run", 1, user="u", input_tokens=10, output_tokens=10))  # 125 credits
    await wait_for(lambda: reserved_is(0))
    balance, _, total = await books.account("u")
    assert balance == total == (100_000 - 7_500 - 125) * MICRO


async def test_spend_beyond_the_reservation_applies_in_full(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": RUN_WORST})
    reply = await admit(nats_client, s, "run", "u")
    assert reply.admitted
    await publish(nats_client, s, usage("run", 0, user="u", input_tokens=1000, output_tokens=3000))  # 32,500
    await publish(
        nats_client,
        s,
        RunClosed(run_id="run", user_id="u", reservation_id=reply.reservation_id, calls=1, status="completed"),
    )
    await wait_for(lambda: _reserved_zero(books, "u"))
    balance, reserved, total = await books.account("u")
    assert balance == total == (RUN_WORST - 32_500) * MICRO and reserved == 0
    refused = await admit(nats_client, s, "next", "u", prompt=1, out=1)
    assert not refused.admitted and refused.error and refused.error.status == 402


async def _reserved_zero(books: Books, user: str) -> bool:
    return (await books.account(user))[1] == 0


async def test_abandoned_reservation_expires(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    async with BillingApp(billing_settings(reservation_ttl_s=0.2)).running():
        await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": RUN_WORST})
        assert (await admit(nats_client, s, "run", "u")).admitted
        assert not (await admit(nats_client, s, "run2", "u")).admitted
        await wait_for(lambda: _reserved_zero(books, "u"))
        assert (await admit(nats_client, s, "run3", "u")).admitted


async def test_start_balance_on_first_use(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    async with BillingApp(billing_settings(start_balance=20_000)).running():
        raw = await nats_client.request(
            s.billing_balance, BalanceRequest(user_id="new").model_dump_json().encode(), timeout=5
        )
        reply = BalanceReply.model_validate_json(raw.data)
        assert reply.balance == Decimal(20_000) and reply.enabled and reply.error is None
        # A read never writes: the start balance is reported, the account is opened on first use.
        again = (await admin(nats_client, s, "balance.get", params={"user_id": "new"})).body
        assert again["balance"] == "20000"
        assert (await admin(nats_client, s, "ledger.list", params={"user_id": "new"})).body["data"] == []
        await admin(nats_client, s, "credits.add", params={"user_id": "new"}, body={"amount": "1"})
        page = (await admin(nats_client, s, "ledger.list", params={"user_id": "new"})).body
        assert [(e["kind"], e["amount"]) for e in page["data"]] == [("start", "20000"), ("topup", "1")]
        assert (await books.account("new")) == (20_001 * MICRO, 0, 20_001 * MICRO)


async def test_negative_credits_and_bad_admin_input(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    assert (await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "100"})).status == 201
    cut = await admin(
        nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "-30.5", "note": "refund"}
    )
    assert cut.status == 201 and cut.body["kind"] == "adjustment" and cut.body["balance_after"] == "69.5"
    assert (await books.account("u")) == (69_500_000, 0, 69_500_000)
    assert (await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": "x"})).status == 400
    assert (await admin(nats_client, s, "credits.add", params={}, body={"amount": "1"})).status == 400
    assert (await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"limit": "101"})).status == 400
    assert (await admin(nats_client, s, "ledger.list", params={"user_id": "u"}, query={"after": "zz"})).status == 404
    assert (await admin(nats_client, s, "nope.op")).status == 400
    garbage = await nats_client.request(s.billing_admit, b"{not json", timeout=5)
    assert b'"status":400' in garbage.data


async def test_balance_disabled_admits_everything_and_still_records(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    async with BillingApp(billing_settings(balance_enabled=False, start_balance=20_000)).running():
        reply = await admit(nats_client, s, "run", "u", prompt=10**9, out=10**9)
        assert reply.admitted and reply.reservation_id is None
        await publish(nats_client, s, usage("run", 0, user="u"))
        await wait_for(lambda: books.has(1))
        balance = (await admin(nats_client, s, "balance.get", params={"user_id": "u"})).body
        assert balance["enabled"] is False and balance["balance"] == "0"
        assert await books.usage_spent() == 7_500 * MICRO  # transactions stay on


async def test_auto_refill_when_due_and_needed(
    billing_settings: Callable[..., BillingSettings], nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    settings = billing_settings(auto_refill_enabled=True, auto_refill_amount=RUN_WORST, auto_refill_interval_s=3600)
    async with BillingApp(settings).running():
        assert (await admit(nats_client, s, "r1", "u")).admitted  # 0 credits: refilled, then admitted
        assert not (await admit(nats_client, s, "r2", "u")).admitted  # not due again for an hour
        page = (await admin(nats_client, s, "ledger.list", params={"user_id": "u"})).body
        assert [e["kind"] for e in page["data"]] == ["refill"]


async def test_an_announced_admission_sends_the_runs_go_ahead_and_a_refusal_does_not(
    billing: BillingApp, nats_client, namespace: str
) -> None:
    s = Subjects(namespace)
    heard: list[RunAdmitted] = []

    async def on_go(msg) -> None:  # type: ignore[no-untyped-def]
        heard.append(RunAdmitted.model_validate_json(msg.data))

    sub = await nats_client.subscribe(s.run_admitted_all, cb=on_go)
    await flush_in_order(nats_client)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST)})
    quiet = await admit(nats_client, s, "run-quiet", "u", prompt=1, out=1)
    admitted = await admit(nats_client, s, "run-go", "u", prompt=1, out=1, announce=True)
    refused = await admit(nats_client, s, "run-broke", "u", announce=True)
    await flush_in_order(nats_client)
    await asyncio.sleep(0.2)
    await sub.unsubscribe()
    assert quiet.admitted and admitted.admitted and not refused.admitted
    assert [(g.run_id, g.reservation_id) for g in heard] == [("run-go", admitted.reservation_id)]


async def test_admission_runs_on_its_own_connections_without_waiting_for_the_wal_flush(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    assert billing.ledger is not None and billing.ledger.admit_path is not None
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST)})
    reply = await admit(nats_client, s, "run-fast", "u")
    assert reply.admitted and reply.reservation_id
    assert await books.account("u") == (RUN_WORST * MICRO, RUN_WORST * MICRO, RUN_WORST * MICRO)
    pool = billing.ledger.admit_path._pool
    assert pool is not None
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "off"


async def prefetch(nc, s: Subjects, user: str, run_ids: list[str], answer_by: datetime | None = None) -> PrefetchReply:  # type: ignore[no-untyped-def]
    req = PrefetchRequest(
        user_id=user,
        agent_id="a",
        provider="openai",
        model="gpt-4o",
        prompt_tokens=1000,
        max_output_tokens=1000,
        run_ids=run_ids,
        answer_by=answer_by,
    )
    return PrefetchReply.model_validate_json(
        (await nc.request(s.billing_prefetch, req.model_dump_json().encode(), timeout=5)).data
    )


async def test_runs_admitted_ahead_reserve_all_or_none_and_only_a_tenth_of_the_available(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 25)})
    granted = await prefetch(nats_client, s, "u", ["pre-1", "pre-2"])
    assert set(granted.reservations) == {"pre-1", "pre-2"} and all(granted.reservations.values())
    assert (await books.account("u"))[1] == 2 * RUN_WORST * MICRO
    # Three more would take more than a tenth of the 23 left: none are granted, nothing is reserved.
    refused = await prefetch(nats_client, s, "u", ["pre-3", "pre-4", "pre-5"])
    assert refused.reservations == {} and refused.error is None
    assert (await books.account("u"))[1] == 2 * RUN_WORST * MICRO
    # A run admitted ahead and never used is handed back with no calls: its hold is released.
    await publish(nats_client, s, RunClosed(run_id="pre-1", user_id="u", calls=0, status="cancelled"))
    await wait_for(lambda: _reserved_is(books, "u", RUN_WORST * MICRO))


async def test_runs_admitted_ahead_after_the_gateway_stopped_waiting_are_handed_back(
    billing: BillingApp, nats_client, namespace: str, books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Billing (or its database) stalled past the gateway's wait: the holds it makes then would wait,
    unused, for the expiry sweep, taking a tenth of the user's credit for a quarter of an hour."""
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 25)})
    # Asked after its answer_by: nothing is reserved at all.
    late = await prefetch(nats_client, s, "u", ["late-1"], answer_by=datetime.now(UTC) - timedelta(seconds=1))
    assert late.reservations == {}
    assert (await books.account("u"))[1] == 0
    # Reserved, but only after the answer_by passed (the database stalled): handed back at once.
    assert billing.ledger is not None
    reserve = billing.ledger.prefetch

    async def stalled(*args, **kwargs):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0.6)
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(billing.ledger, "prefetch", stalled)
    answer_by = datetime.now(UTC) + timedelta(seconds=0.3)
    stale = await prefetch(nats_client, s, "u", ["stale-1", "stale-2"], answer_by=answer_by)
    assert stale.reservations == {}
    await wait_for(lambda: _reserved_is(books, "u", 0))
    # In time: granted as before.
    granted = await prefetch(nats_client, s, "u", ["fresh-1"], answer_by=datetime.now(UTC) + timedelta(seconds=5))
    assert set(granted.reservations) == {"fresh-1"}


async def test_a_run_admitted_too_late_is_handed_back_though_its_gateway_closed_it_first(
    billing: BillingApp, nats_client, namespace: str, books: Books, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gateway closes every run of an ask it stopped waiting for. Its close can be applied before
    billing's stalled reservation commits (so it releases nothing): billing's own close of the runs
    it reserved too late must still reach the ledger, not be dropped by the stream as a copy."""
    s = Subjects(namespace)
    js = nats_client.jetstream()
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 25)})
    assert billing.ledger is not None
    reserve = billing.ledger.prefetch

    async def stalled(*args, **kwargs):  # type: ignore[no-untyped-def]
        # Meanwhile the gateway gave up and closed the run; the close is applied, to nothing.
        closed = RunClosed(run_id="slow-1", user_id="u", calls=0, status="cancelled")
        ack = await js.publish(
            s.usage_run_closed, closed.model_dump_json().encode(), headers={"Nats-Msg-Id": closed.msg_id}
        )

        async def applied() -> bool:
            info = await js.consumer_info(s.usage_stream, s.usage_consumer)
            return info.delivered.stream_seq >= ack.seq and not info.num_ack_pending

        await wait_for(applied)
        await asyncio.sleep(0.3)  # past the answer_by
        return await reserve(*args, **kwargs)

    monkeypatch.setattr(billing.ledger, "prefetch", stalled)
    late = await prefetch(nats_client, s, "u", ["slow-1"], answer_by=datetime.now(UTC) + timedelta(seconds=0.2))
    assert late.reservations == {}
    await wait_for(lambda: _reserved_is(books, "u", 0), timeout=5)


async def _reserved_is(books: Books, user: str, amount: int) -> bool:
    return (await books.account(user))[1] == amount


async def test_a_user_without_an_account_gets_no_runs_ahead(billing: BillingApp, nats_client, namespace: str) -> None:
    assert (await prefetch(nats_client, Subjects(namespace), "nobody-yet", ["pre-x"])).reservations == {}


def _count_statements(billing: BillingApp) -> dict[str, int]:
    """Counts the admission path's statements: one run's, and several runs' together."""
    assert billing.ledger is not None and billing.ledger.admit_path is not None
    path = billing.ledger.admit_path
    counts = {"one": 0, "many": 0}
    one, many = path._one, path._many

    async def counted_one(params):  # type: ignore[no-untyped-def]
        counts["one"] += 1
        return await one(params)

    async def counted_many(user_id, batch):  # type: ignore[no-untyped-def]
        counts["many"] += 1
        return await many(user_id, batch)

    path._one, path._many = counted_one, counted_many  # type: ignore[method-assign]
    return counts


async def test_a_burst_of_one_users_admissions_is_admitted_in_a_few_statements(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s, n = Subjects(namespace), 64
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * n)})
    await admit(nats_client, s, "warm", "u")  # the account row is read once before the burst
    await publish(nats_client, s, RunClosed(run_id="warm", user_id="u", calls=0, status="cancelled"))
    await wait_for(lambda: _reserved_is(books, "u", 0))
    counts = _count_statements(billing)
    replies = await asyncio.gather(*(admit(nats_client, s, f"burst-{i}", "u") for i in range(n)))
    assert all(r.admitted for r in replies)
    assert len({r.reservation_id for r in replies}) == n  # one hold each
    balance, reserved, _ = await books.account("u")
    assert balance == reserved == RUN_WORST * n * MICRO  # exactly the room: all of it held, nothing more
    # One statement per arrival would be 64; those that came while one was in flight went together.
    assert counts["many"] >= 1 and counts["one"] + counts["many"] <= n // 4, counts
    # Each hold is its run's: closing one releases exactly its own.
    await publish(nats_client, s, RunClosed(run_id="burst-0", user_id="u", calls=0, status="cancelled"))
    await wait_for(lambda: _reserved_is(books, "u", RUN_WORST * (n - 1) * MICRO))


async def test_a_burst_the_balance_covers_only_in_part_admits_exactly_what_fits(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 7)})
    counts = _count_statements(billing)
    replies = await asyncio.gather(*(admit(nats_client, s, f"part-{i}", "u") for i in range(40)))
    assert sum(r.admitted for r in replies) == 7
    assert counts["many"] >= 1  # tried together, then one by one
    balance, reserved, _ = await books.account("u")
    assert balance == reserved == RUN_WORST * 7 * MICRO


async def test_one_run_admitted_twice_in_a_burst_has_one_hold_of_both(
    billing: BillingApp, nats_client, namespace: str, books: Books
) -> None:
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 20)})
    runs = ["other-1", "twice", "other-2", "twice", "other-3"]
    replies = await asyncio.gather(*(admit(nats_client, s, run, "u") for run in runs * 2))
    assert all(r.admitted for r in replies)
    twice = {r.reservation_id for run, r in zip(runs * 2, replies, strict=True) if run == "twice"}
    assert len(twice) == 1  # one reservation, grown by each admission
    assert (await books.account("u"))[1] == RUN_WORST * 10 * MICRO


async def test_a_batch_the_database_refuses_is_admitted_one_by_one(billing: BillingApp, books: Books) -> None:
    """Two holds whose total does not fit a bigint: the batch fails, each is then tried alone and has
    its own answer (no room for either), and the next admission of the user is served as usual."""
    assert billing.ledger is not None and billing.ledger.admit_path is not None
    path = billing.ledger.admit_path
    counts = _count_statements(billing)
    huge = 2**62
    now = datetime.now(UTC)

    def params(run: str, cost: int) -> dict[str, object]:
        return {"rid": f"resv_{run}", "run_id": run, "user_id": "nobody", "cost": cost, "expires": now, "now": now}

    results = await asyncio.gather(*(path.admit(**params(f"h{i}", huge)) for i in range(3)))
    assert results == [None, None, None]  # no account: nothing reserved, and no error
    assert counts["many"] == 1 and counts["one"] == 3
    assert await path.admit(**params("after", 1)) is None
    assert path._waiting == {}


async def test_admission_connections_killed_during_bursts_answer_every_request_and_keep_holds_consistent(
    billing: BillingApp, nats_client, namespace: str, books: Books, database_url: str, postgres_url: str
) -> None:
    """Bursts of one user's admissions while the admission connections are terminated under them, again
    and again: every request is answered at once (admitted, or a retryable error), a later burst is
    admitted whole again, and the account's ``reserved`` is exactly the holds that exist (a statement
    cut off after its commit leaves a hold that expires)."""
    s = Subjects(namespace)
    await admin(nats_client, s, "credits.add", params={"user_id": "u"}, body={"amount": str(RUN_WORST * 500)})
    killer = await asyncpg.connect(postgres_url)
    dbname = make_url(database_url).database
    kills = unavailable = 0
    try:
        for burst in range(4):
            asked = asyncio.ensure_future(
                asyncio.gather(*(admit(nats_client, s, f"k{burst}-{i}", "u") for i in range(40)))
            )
            while not asked.done():  # kill the admission connections again and again while it is answered
                kills += await killer.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = $1 AND application_name = 'billing-admission'",
                    dbname,
                )
                await asyncio.sleep(0.001)
            replies = await asyncio.wait_for(asked, 20)
            # Admitted, or an error the client may retry: the database went away, not the request's fault.
            assert all(r.admitted or (r.error is not None and r.error.status >= 500) for r in replies)
            unavailable += sum(1 for r in replies if r.error is not None and r.error.status == 503)
    finally:
        await killer.close()
    # A lost connection is a 503 "unavailable", not a 500 (asyncpg's own state errors while its
    # connections are being killed every millisecond still are, as any error billing does not know).
    assert kills >= 1 and unavailable >= 1
    after = await asyncio.gather(*(admit(nats_client, s, f"after-{i}", "u") for i in range(40)))
    assert all(r.admitted for r in after)
    async with books.engine.connect() as conn:
        held = (
            await conn.execute(text("SELECT coalesce(sum(remaining), 0) FROM billing.reservations WHERE user_id = 'u'"))
        ).scalar_one()
    assert (await books.account("u"))[1] == held
