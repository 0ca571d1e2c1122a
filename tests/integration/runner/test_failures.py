"""Failure paths: provider errors, broken streams, missing usage, cancel, deadline, billing refusal."""

from __future__ import annotations

import asyncio

import pytest

from contracts import CancelRun, ErrorInfo, ExtendReply, ExtendRequest

from .conftest import WAIT_S, Harness, make_request

pytestmark = pytest.mark.integration


async def test_provider_error_fails_the_run_and_records_nothing(harness: Harness) -> None:
    await harness.script("m-err", [{"error": {"status": 500, "message": "upstream exploded"}}])
    got = await harness.run(make_request("m-err"))
    assert got.types == ["started", "failed"]
    err = got.events[-1].error
    assert (err.status, err.type, err.code) == (502, "server_error", "provider_error")
    assert "upstream exploded" in err.message and "sk-test" not in err.message
    assert got.usage == []
    assert (got.closed[0].calls, got.closed[0].status) == (0, "failed")


async def test_mid_stream_failure_records_estimated_usage(harness: Harness) -> None:
    await harness.script("m-break", [{"text": "one two three four five six", "fail_after": 3}])
    got = await harness.run(make_request("m-break"))
    assert got.types[-1] == "failed"
    assert got.events[-1].error.code == "provider_error"
    [record] = got.usage
    assert record.estimated and record.context == "incomplete"
    # Three tokens streamed before the break (perhaps in fewer events: deltas read together are joined).
    assert record.usage.output_tokens == 3
    assert "".join(d.delta for d in got.of("text_delta")).split() == ["one", "two", "three"]
    assert record.usage.input_tokens >= 1
    reported = got.of("usage")[0]
    assert reported.estimated and reported.usage == record.usage
    assert got.events[-1].usage == record.usage
    assert got.closed[0].calls == 1


async def test_omitted_usage_is_estimated(harness: Harness) -> None:
    await harness.script("m-nousage", [{"text": "a b c", "omit_usage": True}])
    got = await harness.run(make_request("m-nousage", "x" * 40))
    assert got.types[-1] == "completed"
    [record] = got.usage
    assert record.estimated and record.context == "incomplete"
    assert record.usage.output_tokens == 3
    assert record.usage.input_tokens == (len("Be brief.") + 40) // 4


async def test_cancel_closes_the_provider_request_and_bills_partial_usage(harness: Harness) -> None:
    await harness.script("m-slow", [{"text": "word " * 200, "tokens_per_s": 20}])
    req = make_request("m-slow")
    first_delta = asyncio.Event()
    got, done, (subs, closed) = await harness.start(
        req, on_event=lambda e: first_delta.set() if e.type == "text_delta" else None
    )
    await asyncio.wait_for(first_delta.wait(), WAIT_S)
    await harness.nc.publish(
        harness.subjects.run_cancel(req.run_id), CancelRun(run_id=req.run_id).model_dump_json().encode()
    )
    rec = await harness.wait_status("m-slow", "disconnected")
    assert rec["model"] == "m-slow"
    await asyncio.wait_for(closed.wait(), WAIT_S)
    [record] = got.usage
    assert record.estimated and record.context == "cancelled"
    assert record.usage.output_tokens >= 1
    assert (got.closed[0].status, got.closed[0].calls) == ("cancelled", 1)
    # The stream still ends, for anyone who resumes it: cancelled, with the usage billed.
    await asyncio.wait_for(done.wait(), WAIT_S)
    failed = got.events[-1]
    assert (failed.type, failed.error.status, failed.error.type) == ("failed", 499, "cancelled")
    assert failed.usage == record.usage
    for s in subs:
        await s.unsubscribe()


async def test_deadline_passed_fails_at_once(harness: Harness) -> None:
    got = await harness.run(make_request("m-late", deadline_s=-1))
    assert got.types == ["failed"]
    assert got.events[0].seq == 0
    err = got.events[0].error
    assert (err.status, err.type, err.code) == (503, "server_error", "queue_timeout")
    assert (got.closed[0].status, got.closed[0].calls) == ("failed", 0)
    assert await harness.requests("m-late") == []


async def test_heartbeats_while_the_model_pauses(harness: Harness) -> None:
    await harness.script("m-pause", [{"text": "before after", "pause_after": 1, "pause_ms": 1000}])
    got = await harness.run(make_request("m-pause"))
    t = got.types
    assert "heartbeat" in t[t.index("text_delta") :]
    assert [e.seq for e in got.events] == list(range(len(got.events)))
    assert got.text == "before after"


async def test_unknown_provider_is_400(harness: Harness) -> None:
    got = await harness.run(make_request("m1", provider="nowhere"))
    err = got.events[-1].error
    assert (err.status, err.code) == (400, "unknown_provider")


async def test_refused_extension_fails_with_402(harness: Harness) -> None:
    asks: list[ExtendRequest] = []

    async def billing(msg) -> None:  # type: ignore[no-untyped-def]
        asks.append(ExtendRequest.model_validate_json(msg.data))
        error = ErrorInfo(status=402, type="insufficient_quota", code="insufficient_quota", message="No credits left.")
        await msg.respond(ExtendReply(ok=False, error=error).model_dump_json().encode())

    sub = await harness.nc.subscribe(harness.subjects.billing_extend, cb=billing)
    await harness.script(
        "m-extend",
        [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}, {"text": "never"}],
    )
    req = make_request("m-extend", tools=["calculator"], reservation_id="res_1", options={"max_tokens": 256})
    got = await harness.run(req)
    await sub.unsubscribe()
    err = got.events[-1].error
    assert (err.status, err.code, err.message) == (402, "insufficient_quota", "No credits left.")
    [ask] = asks
    # The request's max_tokens bounds the whole answer: the next call may write what the first left.
    spent = got.usage[0].usage.output_tokens
    assert (ask.reservation_id, ask.user_id, ask.provider, ask.max_output_tokens) == (
        "res_1",
        "u1",
        "openai",
        256 - spent,
    )
    assert ask.prompt_tokens >= 1
    assert len(await harness.requests("m-extend")) == 1
    assert (got.closed[0].calls, got.closed[0].reservation_id) == (1, "res_1")


async def test_no_billing_responder_is_503(harness: Harness) -> None:
    await harness.script(
        "m-nobill",
        [{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]}, {"text": "never"}],
    )
    got = await harness.run(make_request("m-nobill", tools=["calculator"], reservation_id="res_2"))
    err = got.events[-1].error
    assert (err.status, err.code) == (503, "billing_unavailable")


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("scripted", "expected"),
    [
        # A refused request: a 400 the client's SDK does not retry, with the provider's code.
        (
            {"status": 400, "message": "maximum context length is 8192 tokens", "code": "context_length_exceeded"},
            (400, "invalid_request_error", "context_length_exceeded", None),
        ),
        ({"status": 422, "message": "bad argument"}, (400, "invalid_request_error", "provider_refused_request", None)),
        (
            {"status": 413, "message": "request too large"},
            (400, "invalid_request_error", "provider_refused_request", None),
        ),
        # A busy provider: try again later, as long as it said (or a second).
        (
            {"status": 429, "message": "slow down", "retry_after": "7"},
            (429, "rate_limit_exceeded", "rate_limit_exceeded", 7),
        ),
        ({"status": 429, "message": "slow down"}, (429, "rate_limit_exceeded", "rate_limit_exceeded", 1)),
        (
            {"status": 503, "message": "overloaded", "retry_after": "2.5"},
            (503, "server_error", "provider_unavailable", 3),
        ),
        ({"status": 529, "message": "overloaded"}, (503, "server_error", "provider_unavailable", 1)),
        # The agent's connection is wrong (its key, its model): not the client's to fix or retry sooner.
        ({"status": 401, "message": "bad key"}, (502, "server_error", "provider_error", None)),
        ({"status": 404, "message": "no such model"}, (502, "server_error", "provider_error", None)),
    ],
)
async def test_a_provider_refusal_keeps_its_class(
    harness: Harness, provider: str, scripted: dict[str, object], expected: tuple[object, ...]
) -> None:
    if provider == "anthropic" and "code" in scripted:
        scripted = {**scripted, "message": "prompt is too long: 9000 tokens > 8192 maximum"}
        scripted.pop("code")
    model = f"m-refused-{provider}-{scripted['status']}"
    await harness.script(model, [{"error": scripted}])
    got = await harness.run(make_request(model, provider=provider))
    assert got.types == ["started", "failed"]
    err = got.events[-1].error
    assert (err.status, err.type, err.code, err.retry_after_s) == expected
    assert err.message.startswith(f"The provider answered {scripted['status']}: ")
    assert got.usage == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_a_provider_message_of_megabytes_is_cut_not_a_crash(harness: Harness, provider: str) -> None:
    """An error message larger than a NATS message once crashed the run's end (the client waited out
    its idle timeout); it is cut, and the client gets the provider's 400."""
    model = f"m-huge-error-{provider}"
    await harness.script(model, [{"error": {"status": 400, "message": "E" * 2_000_000}}])
    got = await harness.run(make_request(model, provider=provider))
    assert got.types == ["started", "failed"]
    err = got.events[-1].error
    assert err.status == 400 and err.message.endswith("… (cut)") and len(err.message) < 2_100


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_one_token_of_megabytes_reaches_the_client_whole(harness: Harness, provider: str) -> None:
    """A single delta larger than a NATS message goes out in pieces, not as a crashed run."""
    model = f"m-huge-token-{provider}"
    token = "x" * 1_500_000
    await harness.script(model, [{"text": token}])
    got = await harness.run(make_request(model, provider=provider))
    assert got.events[-1].type == "completed"
    assert got.text == token and len(got.of("text_delta")) >= 1_500_000 // 16_384
