"""``current_time``: the current time as ISO 8601, in an IANA time zone (UTC by default)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .base import ToolError


class CurrentTime:
    name = "current_time"
    server_label = "switchboard"
    description = "The current date and time (ISO 8601), optionally in an IANA time zone such as Europe/Paris."
    parameters: dict[str, Any] = {
        "type": "object",
        "properties": {"timezone": {"type": "string", "description": "IANA time zone; default UTC"}},
        "additionalProperties": False,
    }

    async def call(self, arguments: dict[str, Any]) -> str:
        name = arguments.get("timezone") or "UTC"
        if not isinstance(name, str):
            raise ToolError("'timezone' must be a string")
        try:
            tz = UTC if name.upper() == "UTC" else ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ToolError(f"unknown time zone {name!r}") from None
        return datetime.now(tz).isoformat()
