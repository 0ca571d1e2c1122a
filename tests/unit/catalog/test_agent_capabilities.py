"""An agent's provider and tools are checked against what the live runners announce, and every problem
of its body is named in one 400."""

from __future__ import annotations

from typing import Any

import pytest

from catalog.fleet import MIN_LOST_AFTER_S, FleetCapabilities
from contracts import Capabilities, RunnerHeartbeat
from contracts.fleet import capability_problems

from .test_admin_validation import _run, _Svc

pytestmark = pytest.mark.unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Msg:
    def __init__(self, data: bytes) -> None:
        self.data = data


def _svc_with_runner() -> _Svc:
    svc = _Svc()
    svc.fleet.heard("r1", 1.0, ["anthropic", "openai"], ["calculator", "current_time"])
    return svc


async def test_one_400_names_every_problem_of_a_new_agent() -> None:
    body: dict[str, Any] = {
        "provider": "opneai",
        "model": "m",
        "owner_id": "user_1",
        "tools": ["web_serch", "calculator"],
    }
    reply = await _run("agents.create", body=body, svc=_svc_with_runner())
    assert reply.status == 400 and reply.error is not None
    assert reply.error.param == "name"
    message = reply.error.message
    assert message.startswith("The request has 3 problems: name: ")
    assert "provider: unknown connection 'opneai' (known: anthropic, openai)" in message
    assert "tools[0]: unknown tool 'web_serch' (known: calculator, current_time)" in message
    assert "calculator'" not in message.split("known:")[0]  # the known tool is not a problem


async def test_an_update_naming_an_unknown_tool_is_refused() -> None:
    reply = await _run(
        "agents.update", params={"agent_id": "agent_1"}, body={"tools": ["nope"]}, svc=_svc_with_runner()
    )
    assert reply.status == 400 and reply.error is not None
    assert reply.error.param == "tools[0]"
    assert "unknown tool 'nope'" in reply.error.message


async def test_no_runner_heard_means_nothing_is_checked() -> None:
    # Validation passes and the (untouchable) repository is reached: a 500 from the test double, not a 400.
    body = {"name": "a", "provider": "opneai", "model": "m", "owner_id": "user_1", "tools": ["web_serch"]}
    with pytest.raises(AssertionError, match="repository used"):
        await _run("agents.create", body=body)


async def test_a_runner_silent_too_long_no_longer_counts() -> None:
    clock = _Clock()
    fleet = FleetCapabilities(clock)
    await fleet.on_heartbeat(
        _Msg(
            RunnerHeartbeat(runner_id="r1", interval_s=1.0, connections=["openai"], tools=["calculator"])
            .model_dump_json()
            .encode()
        )  # type: ignore[arg-type]
    )
    fleet.heard("r2", 1.0, ["local"], ["calculator", "search"])
    assert fleet.capabilities() == Capabilities(
        connections=["local", "openai"], tools=["calculator", "search"], runners=2
    )
    clock.now += MIN_LOST_AFTER_S + 1
    fleet.heard("r2", 1.0, ["local"], ["search"])
    assert fleet.capabilities() == Capabilities(connections=["local"], tools=["search"], runners=1)
    clock.now += MIN_LOST_AFTER_S + 1
    assert fleet.capabilities() == Capabilities(runners=0)


def test_a_runner_that_announces_nothing_leaves_that_kind_unchecked() -> None:
    fleet = FleetCapabilities()
    fleet.heard("new", 1.0, ["openai"], ["calculator"])
    fleet.heard("old", 1.0, None, None)
    caps = fleet.capabilities()
    assert caps.connections is None and caps.tools is None and caps.runners == 2
    assert capability_problems("opneai", ["web_serch"], caps) == []


async def test_an_unreadable_heartbeat_is_ignored() -> None:
    fleet = FleetCapabilities()
    await fleet.on_heartbeat(_Msg(b"not json"))  # type: ignore[arg-type]
    assert fleet.capabilities().runners == 0
