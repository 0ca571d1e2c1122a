"""Shared assertions of the e2e tests: the usage a client sees equals the ledger, bodies match the spec."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from devstack.seed import AdminClient
from tests.e2e.fake import eventually
from tests.support.openapi_schema import validate

#: A client's function (chat's shape), and a scripted model turn that calls it.
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL_WEATHER: Any = {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}


def _usage_dict(usage: Any) -> dict[str, Any]:
    if usage is None:
        raise AssertionError("the response carries no usage")
    if hasattr(usage, "to_dict"):
        return usage.to_dict()  # type: ignore[no-any-return]
    return dict(usage)


def client_usage(usage: Any) -> dict[str, int]:
    """The OpenAI usage object, reduced to the normalised token counts billing records."""
    u = _usage_dict(usage)
    prompt_details = u.get("prompt_tokens_details") or {}
    completion_details = u.get("completion_tokens_details") or {}
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], u
    return {
        "prompt": u["prompt_tokens"],
        "cache_read": prompt_details.get("cached_tokens", 0) or 0,
        "cache_write": prompt_details.get("cache_write_tokens", 0) or 0,
        "output": u["completion_tokens"],
        "reasoning": completion_details.get("reasoning_tokens", 0) or 0,
    }


def ledger_usage(entries: list[dict[str, Any]]) -> dict[str, int]:
    """The same counts summed over a run's ledger entries (one per model call)."""
    total = {"prompt": 0, "cache_read": 0, "cache_write": 0, "output": 0, "reasoning": 0}
    for e in entries:
        cache_read = e.get("cache_read_tokens") or 0
        cache_write = e.get("cache_write_tokens") or 0
        total["prompt"] += (e.get("input_tokens") or 0) + cache_read + cache_write
        total["cache_read"] += cache_read
        total["cache_write"] += cache_write
        total["output"] += e.get("output_tokens") or 0
        total["reasoning"] += e.get("reasoning_tokens") or 0
    return total


async def run_ledger(admin: AdminClient, user_id: str, run_id: str, calls: int, timeout: float = 10.0) -> list[dict]:
    """The run's usage entries once all ``calls`` of them are in the ledger (billing commits asynchronously)."""

    async def probe() -> list[dict[str, Any]]:
        return [e for e in admin.ledger(user_id, run_id=run_id) if e.get("kind") == "usage"]

    return await eventually(probe, lambda entries: len(entries) >= calls, timeout=timeout)


async def assert_usage_billed(
    admin: AdminClient, user_id: str, run_id: str, usage: Any, calls: int = 1
) -> dict[str, int]:
    """The usage the client saw is exactly what the ledger holds for the run; returns the counts."""
    entries = await run_ledger(admin, user_id, run_id, calls)
    assert len(entries) == calls, entries
    assert sorted(e["call_index"] for e in entries) == list(range(calls))
    assert all(e["run_id"] == run_id for e in entries)
    assert all(Decimal(str(e["amount"])) < 0 for e in entries), "every priced call costs something"
    seen = client_usage(usage)
    assert seen == ledger_usage(entries)
    return seen


def validate_chunks(chunks: list[Any]) -> list[dict[str, Any]]:
    """Every SDK chunk (as the JSON that arrived) against ``CreateChatCompletionStreamResponse``."""
    raw = [c.to_dict(mode="json") if hasattr(c, "to_dict") else c for c in chunks]
    for chunk in raw:
        validate("CreateChatCompletionStreamResponse", chunk)
    ids = {c["id"] for c in raw}
    assert len(ids) == 1, f"every chunk of a stream has the same id: {ids}"
    return raw
