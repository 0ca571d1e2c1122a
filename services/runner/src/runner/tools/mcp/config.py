"""MCP servers as runner configuration: ``RUNNER_MCP_SERVERS`` (or the file ``RUNNER_MCP_SERVERS_FILE``)
holds ``{"<server>": {"url": "http://…/mcp", "headers": {"Name": "value"}, "timeout_s": 30}}``.

A header value may name environment variables as ``${VAR}`` (read once, at start: a variable that is
not set is a configuration error, never an empty credential sent) and the calling user's id as
``{{user_id}}`` (filled in for each call). Like provider keys, headers stay in this process: never
logged (``repr`` hides them), never on NATS, never in the catalog.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from contracts.mcp import MAX_SERVER_NAME_LENGTH, SERVER_NAME_PATTERN

from ...errors import ConfigError

#: The placeholder replaced with the calling user's id.
USER_ID = "{{user_id}}"
DEFAULT_TIMEOUT_S = 30.0
MAX_TIMEOUT_S = 600.0
MAX_SERVERS = 64
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


@dataclass(frozen=True)
class McpServerConfig:
    """One MCP server: where it is, what to send, how long a call may take."""

    name: str
    url: str
    #: Header values with ``${VAR}`` already replaced; ``{{user_id}}`` is left for :meth:`headers_for`.
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def per_user(self) -> bool:
        """Its headers name the caller, so each user gets sessions (and tool lists) of their own."""
        return any(USER_ID in v for v in self.headers.values())

    def headers_for(self, user_id: str) -> dict[str, str]:
        """The headers of a call made for ``user_id`` (control characters dropped from the id: a
        header value cannot hold them)."""
        safe = _CONTROL.sub("", user_id)
        return {k: v.replace(USER_ID, safe) for k, v in self.headers.items()}


def load_mcp_servers(text: str, file: str, env: Mapping[str, str]) -> dict[str, McpServerConfig]:
    """The servers of ``RUNNER_MCP_SERVERS`` (``text``) or, when it is empty, of the file ``file``;
    :class:`ConfigError` naming the first problem."""
    source = "RUNNER_MCP_SERVERS"
    if not text.strip() and file:
        source = "RUNNER_MCP_SERVERS_FILE"
        try:
            text = Path(file).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"RUNNER_MCP_SERVERS_FILE {file!r} cannot be read ({exc.strerror})") from None
    if not text.strip():
        return {}
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source} is not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{source} must be a JSON object of MCP servers by name")
    if len(spec) > MAX_SERVERS:
        raise ConfigError(f"{source}: at most {MAX_SERVERS} MCP servers")
    return {name: _server(name, item, env) for name, item in spec.items()}


def _server(name: str, item: Any, env: Mapping[str, str]) -> McpServerConfig:
    where = f"MCP server {name[:80]!r}"
    if not SERVER_NAME_PATTERN.match(name):
        raise ConfigError(f"{where}: a name is 1 to {MAX_SERVER_NAME_LENGTH} letters, digits, '_' or '-'")
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be an object with 'url'")
    unknown = set(item) - {"url", "headers", "timeout_s"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r} (known: url, headers, timeout_s)")
    url = item.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{where}: 'url' must be an http(s) URL of its streamable HTTP endpoint")
    timeout = item.get("timeout_s", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout <= MAX_TIMEOUT_S:
        raise ConfigError(f"{where}: 'timeout_s' must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]")
    headers = item.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}: 'headers' must be an object of header names and values")
    resolved: dict[str, str] = {}
    for header, value in headers.items():
        if not _HEADER_NAME.match(header) or not isinstance(value, str):
            raise ConfigError(f"{where}: header {header[:80]!r} needs a token name and a string value")
        resolved[header] = _ENV_REF.sub(partial(_env, env=env, where=f"{where}: header {header!r}"), value)
        if any(c in resolved[header] for c in "\r\n\0"):
            raise ConfigError(f"{where}: header {header!r} holds a line break or NUL")
    return McpServerConfig(name=name, url=url, headers=resolved, timeout_s=float(timeout))  # type: ignore[arg-type]


def _env(match: re.Match[str], *, env: Mapping[str, str], where: str) -> str:
    var = match.group(1)
    value = env.get(var)
    if value is None:
        # Refuse to start rather than send a credential that is silently empty.
        raise ConfigError(f"{where} names ${{{var}}}, which is not set")
    return value
