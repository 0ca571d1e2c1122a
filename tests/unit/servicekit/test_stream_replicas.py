"""``NATS_STREAM_REPLICAS``: one replica count for every stream, bucket and object store a service creates."""

from __future__ import annotations

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import StreamConfig
from nats.js.errors import ServiceUnavailableError
from pydantic import ValidationError

from billing.settings import BillingSettings
from contracts import Subjects
from gateway.settings import GatewaySettings
from runner.settings import RunnerSettings
from servicekit.natsio import ensure_streams, stream_configs

pytestmark = pytest.mark.unit


def test_every_stream_gets_the_replicas() -> None:
    configs = stream_configs(Subjects("ns"), replicas=3)
    assert len(configs) == 3
    assert {c.name: c.num_replicas for c in configs} == {c.name: 3 for c in configs}
    assert {c.num_replicas for c in stream_configs(Subjects("ns"))} == {1}


@pytest.mark.parametrize("settings_type", [GatewaySettings, RunnerSettings, BillingSettings])
def test_every_service_reads_it_with_one_by_default(
    monkeypatch: pytest.MonkeyPatch, settings_type: type[GatewaySettings | RunnerSettings | BillingSettings]
) -> None:
    monkeypatch.delenv("NATS_STREAM_REPLICAS", raising=False)
    assert settings_type().nats_stream_replicas == 1
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    assert settings_type().nats_stream_replicas == 3


@pytest.mark.parametrize("value", ["0", "6", "three"])
def test_out_of_range_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NATS_STREAM_REPLICAS", value)
    with pytest.raises(ValidationError):
        GatewaySettings()


def test_gateway_buckets_follow_it_unless_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    s = GatewaySettings()
    assert (s.responses_store_replicas, s.idempotency_store_replicas) == (3, 3)
    monkeypatch.setenv("GATEWAY_RESPONSES_REPLICAS", "1")
    monkeypatch.setenv("GATEWAY_IDEMPOTENCY_REPLICAS", "2")
    s = GatewaySettings()
    assert (s.responses_store_replicas, s.idempotency_store_replicas) == (1, 2)


class _JetStreamElecting:
    """A JetStream API that times out, then has no responders, then answers (a cluster forming)."""

    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.created: list[str] = []

    async def add_stream(self, config: StreamConfig) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self.created.append(config.name or "")

    async def update_stream(self, config: StreamConfig) -> None:  # pragma: no cover - not reached
        raise AssertionError("no stream exists yet")


async def test_the_streams_wait_for_a_jetstream_still_electing_its_leader() -> None:
    js = _JetStreamElecting([NatsTimeout(), NoRespondersError(), ServiceUnavailableError(code=503)])
    await ensure_streams(js, Subjects("ns"), replicas=3)  # type: ignore[arg-type]
    assert js.created == [c.name for c in stream_configs(Subjects("ns"))]


async def test_a_jetstream_that_never_answers_fails_the_start_after_the_wait() -> None:
    js = _JetStreamElecting([NatsTimeout() for _ in range(100)])
    with pytest.raises(NatsTimeout):
        await ensure_streams(js, Subjects("ns"), ready_within_s=0.5)  # type: ignore[arg-type]
    assert js.created == [] and len(js.failures) > 90


async def test_the_buckets_wait_for_a_jetstream_still_electing_too() -> None:
    """The gateway's object store and key-value bucket are replicated streams made at its start, as
    the streams are: the same wait applies."""
    from servicekit.natsio import ensure_key_value, ensure_object_store

    class Buckets:
        def __init__(self) -> None:
            self.failures: list[Exception] = [NatsTimeout(), NoRespondersError()]

        async def _fail_first(self, made: str) -> str:
            if self.failures:
                raise self.failures.pop(0)
            return made

        async def create_key_value(self, config: object) -> str:
            return await self._fail_first("kv")

        async def create_object_store(self, bucket: str, config: object) -> str:
            return await self._fail_first("objects")

    js = Buckets()
    assert await ensure_key_value(js, "b", ttl_s=60) == "kv"  # type: ignore[arg-type,comparison-overlap]
    js.failures = [ServiceUnavailableError(code=503)]
    assert await ensure_object_store(js, "b", ttl_s=60) == "objects"  # type: ignore[arg-type,comparison-overlap]
    assert js.failures == []
