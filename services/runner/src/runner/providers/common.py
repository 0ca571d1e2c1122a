"""Helpers both adapters share."""

from __future__ import annotations

import json
from typing import Any


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` in it (a provider may echo the key it was given)."""
    if secret and len(secret) >= 8:
        text = text.replace(secret, "***")
    return text


def provider_message(exc: Exception, secret: str) -> str:
    """The provider's own error message, from the JSON error body when it has one."""
    body: Any = getattr(exc, "body", None)
    message: Any = None
    if isinstance(body, dict):
        inner = body.get("error")
        message = body.get("message") or (inner.get("message") if isinstance(inner, dict) else inner)
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    prefix = f"The provider answered {status}: " if status else "The provider call failed: "
    return prefix + redact(str(message), secret)


def status_message(status: int, body: bytes, secret: str) -> str:
    """An HTTP error answer as a message: the provider's own, from its JSON error body when it has one."""
    message: Any = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        message = parsed.get("message") or (inner.get("message") if isinstance(inner, dict) else inner)
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    return f"The provider answered {status}: " + redact(message, secret)


def connection_failed(exc: Exception, secret: str) -> str:
    """A request that never got an answer (unreachable host, timeout)."""
    return "The provider call failed: " + redact(str(exc) or type(exc).__name__, secret)


def client_options(conn: Any, timeout_s: float) -> dict[str, Any]:
    """What both SDK clients are built with. ``max_retries=0``: a retry would double the spend and
    the latency; the run reports the error instead."""
    import httpx2

    return {
        "api_key": conn.api_key,
        "base_url": conn.base_url,
        "max_retries": 0,
        "timeout": httpx2.Timeout(timeout_s, connect=10.0),
    }
