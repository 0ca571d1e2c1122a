"""Billing request/reply messages: admission (reservations) and balances.

Money is credits (1,000,000 credits = 1 USD) as exact decimals; on the wire a decimal is a string.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, Field

from ._base import Event, Message
from .errors import ErrorInfo
from .usage import TokenUsage


class AdmitRequest(Message):
    """Reserve the worst-case cost of a run's next model call before it starts."""

    run_id: str
    user_id: str
    agent_id: str
    provider: str
    model: str
    prompt_tokens: int = Field(ge=0, description="estimate of the prompt")
    max_output_tokens: int = Field(ge=0)
    announce: bool = Field(
        default=False,
        description="the run is already queued (await_admission): when admitted, billing also publishes its "
        "go-ahead (RunAdmitted) for the runner, at the same moment as this reply",
    )


#: The most runs one :class:`PrefetchRequest` may ask for.
MAX_PREFETCH_RUNS = 64


class PrefetchRequest(Message):
    """Admit runs ahead of time: a gateway keeps them for the user's next requests to this agent,
    each of which then starts with no admission round trip. Each run reserves the worst case of a
    prompt of up to ``prompt_tokens`` and ``max_output_tokens`` of output. All or none are granted,
    and only while they take at most a tenth of what the user has available (far from their balance
    only; near it, requests are admitted one by one). An unused run is handed back as a
    ``RunClosed`` with no calls, which releases its reservation."""

    user_id: str
    agent_id: str
    provider: str
    model: str
    prompt_tokens: int = Field(ge=0, description="the largest prompt estimate a run may be used for")
    max_output_tokens: int = Field(ge=0)
    run_ids: list[str] = Field(
        min_length=1, max_length=MAX_PREFETCH_RUNS, description="the runs' ids, chosen by the gateway"
    )
    answer_by: AwareDatetime | None = Field(
        default=None,
        description="when the gateway stops waiting for the answer: billing reserves nothing after it, and "
        "hands back what it reserved too late (a stalled billing or database would otherwise leave holds "
        "nobody uses until they expire)",
    )


class PrefetchReply(Message):
    reservations: dict[str, str | None] = Field(
        default_factory=dict, description="run id → its reservation id (None when balances are off); empty: none"
    )
    error: ErrorInfo | None = None


class AdmitReply(Message):
    admitted: bool
    reservation_id: str | None = None
    reserved: Decimal = Decimal(0)
    error: ErrorInfo | None = Field(default=None, description="402 insufficient_quota when not admitted")


class ExtendRequest(Message):
    """Cover a further model call of a multi-step run: its worst case, of a prompt of up to
    ``prompt_tokens`` and ``max_output_tokens`` of output. What the run's reservation still holds
    beyond what its earlier calls not yet billed will take counts toward it; only the rest is
    reserved from the balance."""

    run_id: str
    reservation_id: str
    user_id: str
    provider: str = Field(description="the agent's provider connection, as the run's usage records name it")
    model: str
    prompt_tokens: int = Field(ge=0)
    max_output_tokens: int = Field(ge=0)
    calls: list[TokenUsage] | None = Field(
        default=None,
        description="the tokens of each of the run's earlier calls, by call index, as recorded: billing "
        "subtracts those not yet billed from what the reservation holds. None: none of the hold counts",
    )


class ExtendReply(Message):
    ok: bool
    reserved: Decimal = Field(
        default=Decimal(0),
        description="credits newly reserved from the balance for the call (its hold may cover the rest)",
    )
    error: ErrorInfo | None = None


class BalanceRequest(Message):
    user_id: str


class BalanceReply(Message):
    user_id: str
    balance: Decimal = Decimal(0)
    reserved: Decimal = Decimal(0)
    enabled: bool = True
    error: ErrorInfo | None = None


class PricesChanged(Event):
    """A model's price was set (core NATS fan-out, no queue group), published by the billing replica
    that stored it.

    Runs a gateway admitted ahead of time were reserved at the prices of their time, and a request
    that takes one starts without asking billing: every gateway hands back the runs it holds ahead
    (their holds are released) and admits its next requests afresh, at the new price. Every billing
    replica reloads the prices it serves from the database."""

    model_key: str = Field(description="the key whose price was set (provider/model, a model, or default)")
