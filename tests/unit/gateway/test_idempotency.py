"""The Idempotency-Key helpers: what a key and a Last-Event-ID may be, and what makes two bodies the same."""

from __future__ import annotations

import pytest

from gateway.errors import GatewayError
from gateway.idempotency import MAX_KEY_LENGTH, body_digest, entry_key, read_key, read_last_event_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("key", ["a", "k" * MAX_KEY_LENGTH, "550e8400-e29b-41d4-a716-446655440000", "with space ~!"])
def test_a_good_key_is_kept_as_sent(key: str) -> None:
    assert read_key({"Idempotency-Key": key}) == key


def test_no_key_is_none() -> None:
    assert read_key({}) is None


@pytest.mark.parametrize("key", ["", "k" * (MAX_KEY_LENGTH + 1), "tab\there", "new\nline", "caf\u00e9", "\x7f"])
def test_a_bad_key_is_a_400_naming_the_header(key: str) -> None:
    with pytest.raises(GatewayError) as caught:
        read_key({"Idempotency-Key": key})
    assert caught.value.status == 400
    assert caught.value.info.param == "Idempotency-Key"
    assert caught.value.info.code == "invalid_idempotency_key"


@pytest.mark.parametrize(("raw", "expected"), [(None, -1), ("", -1), ("0", 0), (" 17 ", 17), ("2147483647", 2**31 - 1)])
def test_last_event_id(raw: str | None, expected: int) -> None:
    headers = {} if raw is None else {"Last-Event-ID": raw}
    assert read_last_event_id(headers) == expected


@pytest.mark.parametrize("raw", ["-1", "1.5", "abc", "2147483648", "9" * 40, "\u00b2", "1\u00b3", "\u0663"])
def test_a_bad_last_event_id_is_a_400(raw: str) -> None:
    with pytest.raises(GatewayError) as caught:
        read_last_event_id({"Last-Event-ID": raw})
    assert caught.value.status == 400 and caught.value.info.param == "Last-Event-ID"


def test_the_body_digest_ignores_formatting_and_key_order_only() -> None:
    a = body_digest(b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    b = body_digest(b'{"messages":[{"content":"hi","role":"user"}],"model":"m"}')
    assert a == b
    assert body_digest(b'{"model":"m","messages":[{"role":"user","content":"hi!"}]}') != a
    # Order inside a list is meaning (the conversation): it changes the digest.
    assert body_digest(b'{"x":[1,2]}') != body_digest(b'{"x":[2,1]}')


def test_entry_keys_are_per_user_and_hide_the_key() -> None:
    assert entry_key("u1", "k") != entry_key("u2", "k")
    assert entry_key("u1", "k") == entry_key("u1", "k")
    hashed = entry_key("u1", "secret-key")
    assert "secret" not in hashed and len(hashed) == 64 and hashed.isalnum()  # a valid KV key, whatever the key
    # No separator ambiguity: ("u1", "2k") and ("u12", "k") are different entries.
    assert entry_key("u1", "2k") != entry_key("u12", "k")


async def test_a_stream_that_broke_is_not_a_run_to_stop_before_the_window_passes() -> None:
    """The gateway's read of a kept run broke (a gap, no event in time): the run may go on, and a
    retry of its key reads it from RUN_EVENTS anywhere. It is cancelled once the window has passed
    with nobody resuming it, not at the break."""
    import asyncio

    from contracts import Subjects
    from gateway.errors import RunStreamError
    from gateway.idempotency import Entry, ResumeWindows
    from gateway.runs import _error

    cancels: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()

    class Nats:
        async def publish(self, subject: str, data: bytes) -> None:
            cancels.append((subject, loop.time()))

    class Store:
        async def get(self, key: str) -> tuple[Entry, int]:
            return Entry(body="b", run_id="run-1", api="chat", created=0), 1

    class Broken:
        run_id = "run-1"
        closed = False

        async def next(self, wait_s: float) -> object:
            raise RunStreamError(_error("no event", "run_timeout", 504))

        async def close(self) -> None:
            self.closed = True

    windows = ResumeWindows(Store(), Nats(), Subjects("t"), window_s=0.4, idle_timeout_s=5)  # type: ignore[arg-type]
    source = Broken()
    started = loop.time()
    windows.keep(source, "key", attachment=0)  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    assert cancels == []  # broken, but the window is still open
    await asyncio.gather(*windows._tasks)
    [(subject, at)] = cancels
    assert subject == Subjects("t").run_cancel("run-1") and at - started >= 0.4
    assert source.closed
