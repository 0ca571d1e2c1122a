"""A stack on its embedded NATS (one server) gives every service ``NATS_STREAM_REPLICAS=1``, whatever
the shell says; on a NATS of the caller's, the caller's value goes through."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.embedded import EmbeddedNats
from devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.unit


def test_an_embedded_server_gets_one_replica(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    stack = Stack(StackConfig(run_dir=tmp_path))
    stack._nats = EmbeddedNats(tmp_path / "nats", tmp_path / "nats.log")  # as _start_nats makes it (not started)
    assert stack._base_env()["NATS_STREAM_REPLICAS"] == "1"


def test_a_cluster_of_ones_own_keeps_the_callers_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_STREAM_REPLICAS", "3")
    stack = Stack(StackConfig(run_dir=tmp_path, nats_url="nats://a:4222,nats://b:4222,nats://c:4222"))
    assert stack._base_env()["NATS_STREAM_REPLICAS"] == "3"
    stack = Stack(StackConfig(run_dir=tmp_path, nats_url="nats://a:4222", env={"NATS_STREAM_REPLICAS": "5"}))
    assert stack._base_env()["NATS_STREAM_REPLICAS"] == "5"
