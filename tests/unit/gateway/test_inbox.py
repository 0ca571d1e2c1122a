"""The run stream's inbox: items in order, and each wait for the next one ends after its own ``wait_s``
— whatever waits came before it (one timer serves them all, moved lazily); a wait holds no exception."""

from __future__ import annotations

import asyncio
import gc
import types

import pytest

from contracts import RunStarted, Subjects
from gateway.runs import RunStream, _Inbox

pytestmark = pytest.mark.unit


async def _timed_get(inbox: _Inbox, wait_s: float) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(TimeoutError):
        await inbox.get(wait_s)
    return loop.time() - start


async def test_items_come_in_order_and_at_once() -> None:
    inbox = _Inbox()
    inbox.put_nowait(b"a")
    inbox.put_nowait(b"b")
    assert not inbox.empty()
    assert inbox.pop() == b"a"
    assert await inbox.get(5) == b"b"
    assert inbox.empty()
    assert inbox.pop() is None

    async def later() -> None:
        await asyncio.sleep(0.02)
        inbox.put_nowait(b"c")

    task = asyncio.create_task(later())
    assert await inbox.get(5) == b"c"
    await task
    inbox.close()


async def test_a_wait_ends_after_its_own_time() -> None:
    inbox = _Inbox()
    waited = await _timed_get(inbox, 0.1)
    assert 0.09 <= waited < 0.5
    inbox.close()


async def test_each_wait_gets_its_whole_time_after_items_came() -> None:
    # Items keep coming just before each wait would end: no wait ends early because of an earlier one's timer.
    inbox = _Inbox()
    for i in range(5):

        async def soon(item: bytes = b"%d" % i) -> None:
            await asyncio.sleep(0.06)
            inbox.put_nowait(item)

        feeder = asyncio.create_task(soon())
        assert await inbox.get(0.1) == b"%d" % i
        await feeder
    # then nothing: the last wait still lasts its whole 0.1 s, counted from its own start
    waited = await _timed_get(inbox, 0.1)
    assert 0.09 <= waited < 0.5
    inbox.close()


async def test_a_shorter_wait_after_a_longer_one_ends_on_time() -> None:
    inbox = _Inbox()

    async def soon() -> None:
        await asyncio.sleep(0.02)
        inbox.put_nowait(b"x")

    feeder = asyncio.create_task(soon())
    assert await inbox.get(30) == b"x"  # leaves a timer set far ahead
    await feeder
    waited = await _timed_get(inbox, 0.05)
    assert waited < 1.0
    inbox.close()


async def test_a_cancelled_wait_leaves_the_inbox_usable() -> None:
    inbox = _Inbox()
    task = asyncio.create_task(inbox.get(30))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    inbox.put_nowait(b"after")
    assert await inbox.get(1) == b"after"
    inbox.close()


async def test_a_stream_waiting_for_its_next_event_keeps_no_exception_alive() -> None:
    """Thousands of streams wait at once: each wait is a few objects, not an exception with its
    traceback and frames (which a wait begun inside an ``except`` block would hold until it ends)."""
    run = RunStream(None, Subjects("t"), "run1")  # type: ignore[arg-type]  # fed directly, no NATS
    waiting = asyncio.create_task(run.next(30))
    await asyncio.sleep(0)
    assert not waiting.done()  # suspended in its wait
    gc.collect()  # what earlier tests left
    frame = waiting.get_coro().cr_frame  # RunStream.next's
    alive = [o for o in gc.get_objects() if isinstance(o, types.TracebackType) and o.tb_frame is frame]
    assert frame is not None and alive == []
    run._on_data(RunStarted(run_id="run1", seq=0, runner_id="r").model_dump_json().encode())
    assert (await waiting).seq == 0
    await run.close()
