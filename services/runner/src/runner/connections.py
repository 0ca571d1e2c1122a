"""Provider connections: named endpoints (kind, base URL, key) from configuration only.

``openai`` and ``anthropic`` always exist and honour the SDKs' standard variables; more come from
``RUNNER_CONNECTIONS``. Keys stay in this process: never logged, never on NATS.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from .errors import ConfigError

Kind = Literal["openai", "anthropic"]

#: Some value is needed for the SDK to start; a local OpenAI-compatible server ignores it.
PLACEHOLDER_KEY = "not-set"


@dataclass(frozen=True)
class Connection:
    name: str
    kind: Kind
    base_url: str | None
    api_key: str = field(repr=False)  # repr=False: a logged Connection never shows its key


def load_connections(extra_json: str, env: Mapping[str, str]) -> dict[str, Connection]:
    """The built-in connections plus ``extra_json`` (``{"name": {"kind", "base_url", "api_key_env"}}``)."""
    conns = {
        "openai": Connection(
            "openai", "openai", env.get("OPENAI_BASE_URL") or None, env.get("OPENAI_API_KEY") or PLACEHOLDER_KEY
        ),
        "anthropic": Connection(
            "anthropic",
            "anthropic",
            env.get("ANTHROPIC_BASE_URL") or None,
            env.get("ANTHROPIC_API_KEY") or PLACEHOLDER_KEY,
        ),
    }
    if not extra_json.strip():
        return conns
    try:
        spec = json.loads(extra_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"RUNNER_CONNECTIONS is not JSON: {exc.msg}") from None
    if not isinstance(spec, dict):
        raise ConfigError("RUNNER_CONNECTIONS must be a JSON object of connections")
    for name, item in spec.items():
        if not isinstance(item, dict) or item.get("kind") not in ("openai", "anthropic"):
            raise ConfigError(f"connection {name!r}: kind must be 'openai' or 'anthropic'")
        key_env = item.get("api_key_env")
        conns[name] = Connection(
            name=name,
            kind=item["kind"],
            base_url=item.get("base_url") or None,
            api_key=(env.get(key_env) if key_env else None) or PLACEHOLDER_KEY,
        )
    return conns
