"""``NATS_STREAM_REPLICAS``: one replica count for every stream, bucket and object store a service creates."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from billing.settings import BillingSettings
from contracts import Subjects
from gateway.settings import GatewaySettings
from runner.settings import RunnerSettings
from servicekit.natsio import stream_configs

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
