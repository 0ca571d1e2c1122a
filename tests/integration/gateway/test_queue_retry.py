"""Queueing a run survives a lost acknowledgement and a stream without a leader for a moment: the
publish is tried again, and the run id (the message id) keeps the run queued once (real NATS)."""

from __future__ import annotations

from typing import Any

import nats
import pytest
from nats.js.errors import NoStreamResponseError

from contracts import Subjects
from gateway import runs
from gateway.runs import RunStream
from servicekit.natsio import ensure_streams

pytestmark = pytest.mark.integration


class _Flaky:
    """The real JetStream context, whose first ``failures`` publishes fail as a loaded machine makes
    them fail: ``lost_ack`` stores the message and then times out; otherwise the stream has no leader."""

    def __init__(self, js: Any, failures: int, *, lost_ack: bool) -> None:
        self.js, self.failures, self.lost_ack, self.calls = js, failures, lost_ack, 0

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls <= self.failures:
            if self.lost_ack:
                await self.js.publish(subject, payload, **kwargs)
                raise nats.errors.TimeoutError
            raise NoStreamResponseError
        return await self.js.publish(subject, payload, **kwargs)


async def _queued(js: Any, subjects: Subjects) -> int:
    return (await js.stream_info(subjects.runs_stream)).state.messages


@pytest.mark.parametrize("lost_ack", [True, False])
async def test_a_failed_publish_is_tried_again_and_the_run_is_queued_once(
    nats_client: nats.NATS, namespace: str, lost_ack: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "PUBLISH_RETRY_PAUSE_S", 0.01)
    subjects = Subjects(namespace)
    js = nats_client.jetstream()
    await ensure_streams(js, subjects)
    flaky = _Flaky(js, runs.PUBLISH_ATTEMPTS - 1, lost_ack=lost_ack)
    await RunStream(nats_client, subjects, "run-retried").publish(flaky, b"{}", 1.0)  # type: ignore[arg-type]
    assert flaky.calls == runs.PUBLISH_ATTEMPTS
    assert await _queued(js, subjects) == 1  # the copies stored after a lost ack were duplicates


async def test_a_queue_that_stays_unavailable_fails_after_the_last_attempt(
    nats_client: nats.NATS, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs, "PUBLISH_RETRY_PAUSE_S", 0.01)
    subjects = Subjects(namespace)
    js = nats_client.jetstream()
    await ensure_streams(js, subjects)
    flaky = _Flaky(js, runs.PUBLISH_ATTEMPTS, lost_ack=False)
    with pytest.raises(NoStreamResponseError):
        await RunStream(nats_client, subjects, "run-refused").publish(flaky, b"{}", 1.0)  # type: ignore[arg-type]
    assert flaky.calls == runs.PUBLISH_ATTEMPTS and await _queued(js, subjects) == 0
