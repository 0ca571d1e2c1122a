"""Ports promised to processes that have not bound them yet are not promised twice: the system may
hand out a port again between the moment it was read and the moment its process binds it (a
restarted ``make run`` whose gateway port came back as a service's health port answered the admin
API with that health server's 404)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import procs
from devstack.stack import Stack, StackConfig

pytestmark = pytest.mark.unit


class ScriptedSockets:
    """``socket.socket`` whose ``bind(0)`` hands out the scripted ports, in order."""

    def __init__(self, ports: list[int]) -> None:
        self.ports: Iterator[int] = iter(ports)

    def __call__(self, *args: Any, **kwargs: Any) -> ScriptedSockets._Socket:
        return self._Socket(next(self.ports))

    class _Socket:
        def __init__(self, port: int) -> None:
            self.port = port

        def __enter__(self) -> ScriptedSockets._Socket:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def bind(self, address: tuple[str, int]) -> None:
            return None

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)


def test_a_port_to_avoid_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "socket", ScriptedSockets([5000, 5000, 5001]))
    assert procs.free_port(avoid={5000}) == 5001


def test_no_health_port_is_the_gateway_s_or_another_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    gateway = 40001
    # The system hands out the gateway's port, then one port twice, as it may between binds.
    monkeypatch.setattr(socket, "socket", ScriptedSockets([gateway, 40002, 40002, 40003, gateway, 40004, 40005]))
    stack = Stack(
        StackConfig(
            run_dir=tmp_path,
            catalog_database_url="postgresql://x@127.0.0.1/db",
            billing_database_url="postgresql://x@127.0.0.1/db",
            provider_env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
            gateway_port=gateway,
            runners=2,
        )
    )
    stack._build_services()
    health = [stack._health_ports[name] for name in ("catalog", "billing", "runner-0", "runner-1")]
    assert len(set(health)) == 4 and gateway not in health
    assert stack.gateway_port == gateway
