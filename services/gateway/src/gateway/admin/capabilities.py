"""An agent's provider and tools checked against what the runner fleet serves, as the catalog knows it
(admin op ``fleet.capabilities``), so that one 400 names a misspelt provider or an unknown tool
together with the body's other problems. The catalog checks again when it writes the agent."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from contracts import Capabilities
from contracts.fleet import capability_problems
from contracts.problems import Problem

from ..context import GatewayContext
from .forward import forward

#: The catalog's admin operation answering :class:`contracts.Capabilities`.
CAPABILITIES_OP = "fleet.capabilities"


async def fleet_capabilities(ctx: GatewayContext) -> Capabilities:
    """What the live runners serve; nothing known (nothing checked) when the catalog cannot say."""
    reply = await forward(ctx, "catalog", CAPABILITIES_OP)
    if reply.error is not None or not isinstance(reply.body, dict):
        return Capabilities()
    try:
        return Capabilities.model_validate(reply.body)
    except ValidationError:
        return Capabilities()


async def agent_problems(ctx: GatewayContext, data: dict[str, Any]) -> list[Problem]:
    """The problems of an agent body's ``provider`` and ``tools`` (when it sets them)."""
    if "provider" not in data and "tools" not in data:
        return []
    caps = await fleet_capabilities(ctx)
    return capability_problems(data.get("provider"), data.get("tools"), caps)
