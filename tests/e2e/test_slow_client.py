"""Slow clients on the whole stack: a client that reads nothing for a while, then reads, gets its whole
stream as long as what waited for it fits the gateway's per-stream buffer
(``GATEWAY_STREAM_BUFFER_BYTES``, small here); past it the run is cancelled and billed for what it did,
the stream ends with a ``slow_client`` error, the gateway's memory stays flat, and a client that still
reads nothing is not waited on forever. The client is a raw socket with a small receive buffer, so what
it does not read stays in the gateway."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.checks import run_ledger
from tests.e2e.conftest import StackHandle, own_stack
from tests.e2e.fake import eventually
from tests.e2e.slow_client import StalledClient, chat_text, kernel_send_queue, rss_bytes, sse_data

pytestmark = pytest.mark.e2e

#: The stack's per-stream buffer. On loopback the kernel holds up to about 4 MB of a connection's unsent
#: data as well (send buffer autotuning), so a test's stream has to be larger than that to reach it.
BUFFER = 4 * 1024 * 1024
#: What the gateway's transport and the client's kernel hold besides (asyncio's high-water mark, the
#: client's small receive buffer), generously.
OTHER_BUFFERS = 128 * 1024


@pytest.fixture(scope="module")
def slow_stack(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str, redis_url: str
) -> Iterator[StackHandle]:
    env = {"GATEWAY_STREAM_BUFFER_BYTES": str(BUFFER)}
    with own_stack(tmp_path_factory.mktemp("slow"), nats_url, postgres_url, redis_url, env=env) as handle:
        yield handle


def _words(count: int, size: int) -> str:
    return " ".join(f"w{i:05d}" + "x" * (size - 6) for i in range(count))


def _request(e2e: StackHandle, model: str) -> StalledClient:
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "Talk."}]}
    return StalledClient(
        e2e.stack.gateway_url, "/v1/chat/completions", body, {"Authorization": f"Bearer {e2e.seeded.api_key}"}
    )


def _run_id(body: bytes) -> str:
    match = re.search(rb'"id":"([^"]+)"', body)
    assert match, body[:500]
    return match.group(1).decode()


async def _open_streams(e2e: StackHandle) -> float:
    async with httpx.AsyncClient(timeout=5) as http:
        text = (await http.get(f"{e2e.stack.gateway_url}/metrics")).text
    match = re.search(r"^gateway_open_streams (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_a_client_that_stalls_within_the_buffer_gets_the_whole_stream(slow_stack: StackHandle) -> None:
    e2e = slow_stack
    agent = e2e.agent()
    # ~4.7 MB of events: more than the kernel holds, less than it and the buffer together.
    words = 4600
    text = _words(words, 1000)
    await e2e.fake.script(agent.model, [{"text": text, "usage": {"prompt_tokens": 10, "output_tokens": words}}])
    client = _request(e2e, agent.id)
    try:
        # The whole run happens while the client reads nothing; then it stalls a while longer.
        await e2e.fake.wait(agent.model, "completed", timeout=20)
        await asyncio.sleep(3.0)
        in_kernel = kernel_send_queue(client.server_port, client.client_port)
        answer = await asyncio.to_thread(client.read_all, 30)
    finally:
        client.close()
    assert answer.status == 200 and answer.complete
    assert chat_text(answer.body) == text
    assert sse_data(answer.body)[-1] == "[DONE]"
    # What neither kernel nor transport held waited in the gateway's buffer: a good part of the stream.
    in_gateway = len(answer.body) - in_kernel - OTHER_BUFFERS
    assert in_gateway > 256 * 1024, (len(answer.body), in_kernel)
    entries = await run_ledger(e2e.admin, e2e.seeded.user_id, _run_id(answer.body), calls=1, timeout=15)
    assert entries[0]["output_tokens"] == words


class _RssWatch:
    """Samples a process' resident memory until stopped; the highest sample."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> _RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


async def test_past_the_buffer_the_run_is_cancelled_billed_and_the_stream_ends(slow_stack: StackHandle) -> None:
    e2e = slow_stack
    agent = e2e.agent()
    # 96 MB of events if the run were let go to its end: 24 times the buffer.
    total = 12000
    text = _words(total, 8000)
    # 12 s of provider if not stopped: the overflow comes after about half a second, and a CI machine
    # whose gateway falls behind (NATS then holds back events it reads later) still stops the run long
    # before the provider ends it (at 4,000 tokens/s, 3 s, it once did not).
    turn = {"text": text, "tokens_per_s": 1000, "usage": {"prompt_tokens": 10, "output_tokens": total}}
    await e2e.fake.script(agent.model, [turn])
    gateway = e2e.stack.processes["gateway"].pid
    assert gateway is not None
    before = rss_bytes(gateway)
    with _RssWatch(gateway) as rss:
        client = _request(e2e, agent.id)
        try:
            # The gateway stops the run while the client still reads nothing.
            record = await e2e.fake.wait(agent.model, "disconnected", timeout=20)
            # Read now (within the time the gateway leaves a stopped stream's client): what waited, then the error.
            answer = await asyncio.to_thread(client.read_all, 20)
        finally:
            client.close()
    assert record["tokens_sent"] < total / 2, record
    assert answer.status == 200 and answer.complete, answer.body[-300:]
    data = sse_data(answer.body)
    assert "[DONE]" not in data  # the error ends the stream
    error = json.loads(data[-1])["error"]
    assert error["code"] == "slow_client" and "slowly" in error["message"]
    got = chat_text(answer.body)
    assert got and text.startswith(got)
    # Billed for what the run consumed: more than nothing, far from the whole answer.
    (entry,) = await run_ledger(e2e.admin, e2e.seeded.user_id, _run_id(answer.body), calls=1, timeout=15)
    assert 0 < entry["output_tokens"] < total / 2
    # The gateway held about a buffer's worth, never the tens of megabytes the run would have sent.
    assert rss.peak - before < 6 * BUFFER, (before, rss.peak)
    assert await _open_streams(e2e) == 0


async def test_a_client_that_never_reads_again_is_not_waited_on_forever(slow_stack: StackHandle) -> None:
    e2e = slow_stack
    agent = e2e.agent()
    total = 12000
    turn = {"text": _words(total, 8000), "tokens_per_s": 4000, "usage": {"prompt_tokens": 10, "output_tokens": total}}
    await e2e.fake.script(agent.model, [turn])
    client = _request(e2e, agent.id)
    try:
        await e2e.fake.wait(agent.model, "disconnected", timeout=20)
        # The stream's handler ends after the grace (the idle timeout, 3 s here), its client unread.
        deadline = time.monotonic() + 15
        while await _open_streams(e2e) > 0:
            assert time.monotonic() < deadline, "the stopped stream still waits for its client"
            await asyncio.sleep(0.2)
        answer = await asyncio.to_thread(client.read_all, 20)
    finally:
        client.close()
    # The connection was dropped: part of the stream, and no end.
    assert answer.status == 200 and not answer.complete
    assert "[DONE]" not in sse_data(answer.body)


async def test_a_retry_that_reads_too_slowly_ends_alone_and_the_run_goes_on(slow_stack: StackHandle) -> None:
    """A retry with the first request's Idempotency-Key reads the run from RUN_EVENTS: past the buffer
    only that stream ends; the run, which the first client reads, goes on to its end, billed once."""
    e2e = slow_stack
    agent = e2e.agent()
    # 20 MB of events: five times the buffer, with room for what the kernel holds; at 3.2 MB/s, which the
    # first client (a Python reader on a busy 2-core machine) keeps up with even through a 2 s stall —
    # at 20 MB/s it fell behind its own buffer in CI and its stream was rightly ended as a slow client.
    total = 2500
    text = _words(total, 8000)
    turn = {"text": text, "tokens_per_s": 400, "usage": {"prompt_tokens": 10, "output_tokens": total}}
    await e2e.fake.script(agent.model, [turn])
    body = {"model": agent.id, "stream": True, "messages": [{"role": "user", "content": "Talk."}]}
    headers = {"Authorization": f"Bearer {e2e.seeded.api_key}", "Idempotency-Key": f"slow-{secrets.token_hex(4)}"}

    async def read_fast() -> bytes:
        got = bytearray()
        async with (
            httpx.AsyncClient(base_url=e2e.stack.gateway_url, timeout=60) as http,
            http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as resp,
        ):
            assert resp.status_code == 200
            async for chunk in resp.aiter_raw():
                got += chunk
        return bytes(got)

    first = asyncio.ensure_future(read_fast())
    await eventually(lambda: e2e.fake.requests(agent.model), lambda found: len(found) == 1)
    retry = StalledClient(e2e.stack.gateway_url, "/v1/chat/completions", body, headers)
    try:
        whole = await first
        answer = await asyncio.to_thread(retry.read_all, 20)
    finally:
        retry.close()
    # The first client got everything; the run was not cancelled, and was billed once, whole.
    assert chat_text(whole) == text
    assert [r["status"] for r in await e2e.fake.requests(agent.model)] == ["completed"]
    (entry,) = await run_ledger(e2e.admin, e2e.seeded.user_id, _run_id(whole), calls=1, timeout=15)
    assert entry["output_tokens"] == total
    # The slow retry got a beginning of the same stream, then its end — the slow_client error, or (when it
    # read nothing within the grace) a dropped connection — although the run it read went on to its end:
    # its replay was stopped at the buffer, not kept whole for it.
    got = chat_text(answer.body)
    assert answer.status == 200 and text.startswith(got) and got != text
    if answer.complete:
        assert json.loads(sse_data(answer.body)[-2])["error"]["code"] == "slow_client"
