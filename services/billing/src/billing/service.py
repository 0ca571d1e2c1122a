"""Billing's answers: admission, extension, balances and the admin operations. No framework here.

Every request is checked against what billing can store and compute (:mod:`billing.inputs`) before
it touches the database: a bad one is a :class:`billing.errors.BadRequest` (400), never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from contracts import (
    AdminReply,
    AdminRequest,
    AdmitReply,
    AdmitRequest,
    BalanceReply,
    BalanceRequest,
    ExtendReply,
    ExtendRequest,
    PrefetchReply,
    PrefetchRequest,
)
from contracts.admin import Balance, CreditsAdd, LedgerEntry, Page, Price, PriceSet

from . import inputs
from .errors import BadRequest, BillingError, NotFound, insufficient_quota
from .ledger import Ledger
from .money import MAX_MICRO, MoneyError, from_micro, to_micro
from .pricing import DEFAULT_KEY, PriceEntry
from .sanitize import NOTE_WIDTH, RUN_ID_WIDTH

PRICE_FIELDS = ("input", "output", "cache_write", "cache_read")


class BillingService:
    def __init__(
        self,
        ledger: Ledger,
        refused: Callable[[str, str], None] | None = None,
        prices_changed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self.ledger = ledger
        #: Told (operation, reason) of each reservation refused (billing's metrics).
        self.refused = refused or _nobody
        #: Told the key of each price set, once it is stored (billing publishes PricesChanged).
        self.prices_changed = prices_changed or _no_announcement

    async def reload_prices(self) -> None:
        """Serve the prices stored now: another replica set one."""
        await self.ledger.reload_prices()

    @property
    def balance_enabled(self) -> bool:
        return self.ledger.policy.balance_enabled

    def _worst_case(self, req: AdmitRequest | ExtendRequest | PrefetchRequest) -> int:
        """What one run (or its next call) may cost at most, in µcr: what admission reserves (a 400
        beyond what a BIGINT holds)."""
        price = self.ledger.prices.lookup(req.model, req.provider)
        return inputs.cost(price.worst_case(req.prompt_tokens, req.max_output_tokens))

    async def admit(self, req: AdmitRequest) -> AdmitReply:
        inputs.user_id(req.user_id)
        inputs.run_id(req.run_id)  # it names the go-ahead's subject, even with balances off
        if not self.balance_enabled:
            return AdmitReply(admitted=True)
        cost = self._worst_case(req)
        rid, cost, available = await self.ledger.admit(req.user_id, req.run_id, cost)
        if rid is None:
            self.refused("admit", "insufficient_quota")
            return AdmitReply(
                admitted=False, error=insufficient_quota(str(from_micro(cost)), str(from_micro(max(0, available))))
            )
        return AdmitReply(admitted=True, reservation_id=rid, reserved=from_micro(cost))

    async def prefetch(self, req: PrefetchRequest) -> PrefetchReply:
        inputs.user_id(req.user_id)
        for run_id in req.run_ids:
            inputs.run_id(run_id, "run_ids")
        if not self.balance_enabled:
            return PrefetchReply(reservations=dict.fromkeys(req.run_ids))
        cost = self._worst_case(req)
        if 10 * cost * len(req.run_ids) > MAX_MICRO:  # the ledger's "a tenth of what is available" test
            self.refused("prefetch", "balance_margin")
            return PrefetchReply()  # refused, as for any balance: none could hold ten times this
        reservations = await self.ledger.prefetch(req.user_id, req.run_ids, cost)
        if not reservations:
            self.refused("prefetch", "balance_margin")
        return PrefetchReply(reservations=reservations)

    async def extend(self, req: ExtendRequest) -> ExtendReply:
        inputs.user_id(req.user_id)
        inputs.text("reservation_id", req.reservation_id, inputs.RESERVATION_ID_WIDTH)
        if not self.balance_enabled:
            return ExtendReply(ok=True)
        cost = self._worst_case(req)
        earlier = None
        if req.calls is not None:  # priced as their usage records will be
            price = self.ledger.prices.lookup(req.model, req.provider)
            earlier = [price.charge(tokens) for tokens in req.calls]
        done = await self.ledger.extend(req.reservation_id, req.user_id, cost, earlier)
        if done.outcome == "ok":
            return ExtendReply(ok=True, reserved=from_micro(done.reserved))
        if done.outcome == "not_found":
            self.refused("extend", "not_found")
            return ExtendReply(ok=False, error=NotFound(f"no reservation {req.reservation_id!r}").info)
        row = await self.ledger.balance(req.user_id)
        # what the call could have had: the balance's room and what the run's own hold covered
        available = max(0, int(row["balance"]) - int(row["reserved"])) + done.held
        self.refused("extend", "insufficient_quota")
        return ExtendReply(ok=False, error=insufficient_quota(str(from_micro(cost)), str(from_micro(available))))

    async def balance(self, req: BalanceRequest) -> BalanceReply:
        b = await self._balance(inputs.user_id(req.user_id))
        return BalanceReply(user_id=req.user_id, balance=b.balance, reserved=b.reserved, enabled=b.enabled)

    async def _balance(self, user_id: str) -> Balance:
        row = await self.ledger.balance(user_id)
        bal, res = int(row["balance"]), int(row["reserved"])
        return Balance(
            user_id=user_id,
            balance=from_micro(bal),
            reserved=from_micro(res),
            available=from_micro(bal - res),
            enabled=self.balance_enabled,
        )

    # --- admin -----------------------------------------------------------------------------------
    async def admin(self, req: AdminRequest) -> AdminReply:
        try:
            status, body = await self._admin(req)
        except BillingError as exc:
            return AdminReply(status=exc.info.status, error=exc.info)
        return AdminReply(status=status, body=body)

    async def _admin(self, req: AdminRequest) -> tuple[int, Any]:
        op, params, query = req.op, req.params, req.query
        if op == "balance.get":
            return 200, (await self._balance(inputs.user_id(_param(params, "user_id")))).model_dump(mode="json")
        if op == "credits.add":
            body = _body(req)
            if isinstance(body.get("amount"), float):
                raise BadRequest("amount must be a decimal string or an integer, not a float", param="amount")
            credits = _validate(CreditsAdd, body)
            try:
                amount = to_micro(credits.amount)
            except MoneyError as exc:
                raise BadRequest(str(exc), param="amount") from exc
            if credits.note is not None:
                inputs.text("note", credits.note, NOTE_WIDTH)
            kind = "topup" if amount >= 0 else "adjustment"
            row = await self.ledger.credit(inputs.user_id(_param(params, "user_id")), amount, kind, credits.note)
            return 201, _entry(row)
        if op == "ledger.list":
            limit = _limit(query)
            after = inputs.ledger_cursor(query.get("after"))
            run_id = query.get("run_id") or None
            if run_id is not None:
                inputs.text("run_id", run_id, RUN_ID_WIDTH)
            rows = await self.ledger.entries(
                inputs.user_id(_param(params, "user_id")), limit=limit + 1, after=after, run_id=run_id
            )
            data = [_entry(r) for r in rows[:limit]]
            page = Page(
                data=data,
                first_id=data[0]["id"] if data else None,
                last_id=data[-1]["id"] if data else None,
                has_more=len(rows) > limit,
            )
            return 200, page.model_dump(mode="json")
        if op == "pricing.list":
            table = self.ledger.prices
            items = [_price(k, e) for k, e in sorted(table.entries.items())] + [_price(DEFAULT_KEY, table.default)]
            return 200, Page(data=items, has_more=False).model_dump(mode="json")
        if op == "pricing.put":
            key = inputs.text("model_key", _param(params, "model_key").lower(), inputs.MODEL_KEY_WIDTH)
            body = _body(req)
            for name in PRICE_FIELDS:
                if isinstance(body.get(name), float):
                    raise BadRequest(f"{name} must be a decimal string or an integer, not a float", param=name)
            price_set = _validate(PriceSet, body)
            try:
                entry = PriceEntry.parse(price_set.model_dump(), "admin")
            except MoneyError as exc:
                raise BadRequest(str(exc)) from exc
            await self.ledger.put_price(key, entry)
            # Before the answer: runs that gateways admitted ahead at the old price go back, and the
            # gateway that relays this hears it first.
            await self.prices_changed(key)
            return 200, _price(key, entry)
        raise BadRequest(f"unknown operation {op!r}", param="op")


def _param(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise BadRequest(f"missing path parameter {name}", param=name)
    return value


def _body(req: AdminRequest) -> dict[str, Any]:
    if not isinstance(req.body, dict):
        raise BadRequest("the body must be a JSON object")
    return req.body


def _validate(model: Any, body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadRequest(err["msg"], param=".".join(str(p) for p in err["loc"]) or None) from exc


def _limit(query: dict[str, str]) -> int:
    raw = query.get("limit", "20")
    try:
        limit = int(raw) if len(raw) <= 10 else 0  # int() of a long digit string is slow, then refused
    except ValueError as exc:
        raise BadRequest("limit must be an integer", param="limit") from exc
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be between 1 and 100", param="limit")
    return limit


def _entry(row: dict[str, Any]) -> dict[str, Any]:
    def dec(name: str) -> Any:
        v = row.get(name)
        return None if v is None else from_micro(v)

    entry = LedgerEntry(
        id=f"le_{row['seq']}",
        user_id=row["user_id"],
        kind=row["kind"],
        amount=from_micro(row["amount"]),
        balance_after=dec("balance_after"),
        run_id=row.get("run_id"),
        call_index=row.get("call_index"),
        agent_id=row.get("agent_id"),
        conversation_id=row.get("conversation_id"),
        provider=row.get("provider"),
        model=row.get("model"),
        price_key=row.get("price_key"),
        input_tokens=row.get("input_tokens"),
        cache_write_tokens=row.get("cache_write_tokens"),
        cache_read_tokens=row.get("cache_read_tokens"),
        output_tokens=row.get("output_tokens"),
        reasoning_tokens=row.get("reasoning_tokens"),
        input_price=dec("input_price"),
        output_price=dec("output_price"),
        cache_write_price=dec("cache_write_price"),
        cache_read_price=dec("cache_read_price"),
        context=row.get("context"),
        estimated=bool(row.get("estimated")),
        note=row.get("note"),
        created_at=row["created_at"],
    )
    return entry.model_dump(mode="json")


def _price(key: str, e: PriceEntry) -> dict[str, Any]:
    return Price(
        model_key=key,
        input=from_micro(e.input),
        output=from_micro(e.output),
        cache_write=None if e.cache_write is None else from_micro(e.cache_write),
        cache_read=None if e.cache_read is None else from_micro(e.cache_read),
        source=e.source,  # type: ignore[arg-type]
    ).model_dump(mode="json")


def _nobody(operation: str, reason: str) -> None:
    """No one to tell of a refusal."""


async def _no_announcement(model_key: str) -> None:
    """No one to tell of a price set."""
