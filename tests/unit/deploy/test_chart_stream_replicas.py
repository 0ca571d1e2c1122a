"""The chart gives every service the replica count of the JetStream streams it creates (``nats.streamReplicas``)."""

from __future__ import annotations

import helm_python as helm
import pytest

from tests.unit.deploy.test_chart import EXISTING, SERVICES, VALUES, env_of, of_kind, render, render_files

pytestmark = pytest.mark.unit


def test_three_replicas_by_default_for_every_service() -> None:
    assert VALUES["nats"]["streamReplicas"] == 3
    deps = of_kind(render(EXISTING), "Deployment")
    for name in SERVICES:
        assert env_of(deps[f"sb-{name}"])["NATS_STREAM_REPLICAS"]["value"] == "3", name


def test_a_single_server_sets_one() -> None:
    deps = of_kind(render(EXISTING, {"nats": {"streamReplicas": 1}}), "Deployment")
    for name in SERVICES:
        assert env_of(deps[f"sb-{name}"])["NATS_STREAM_REPLICAS"]["value"] == "1", name


@pytest.mark.parametrize("replicas", [0, 6, "3"])
def test_out_of_range_or_not_a_number_is_refused(replicas: object) -> None:
    with pytest.raises(helm.HelmValuesError):
        render_files(EXISTING, {"nats": {"streamReplicas": replicas}})
