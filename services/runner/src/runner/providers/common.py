"""Helpers both adapters share."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from ..errors import ProviderError

#: A provider's error code passed on to the client: a plain identifier (OpenAI's
#: ``context_length_exceeded``), nothing longer or stranger.
_PLAIN_CODE = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: Anthropic says a conversation is too long for the model in words, not with a code; OpenAI clients
#: (LangChain's context-overflow handling, say) know it by OpenAI's code.
_TOO_LONG = re.compile(r"prompt is too long", re.IGNORECASE)
#: The longest ``Retry-After`` passed on (seconds).
MAX_RETRY_AFTER_S = 3600


#: The most of a provider's own error message passed on (characters): it travels in one NATS message,
#: reaches the client and the logs.
MAX_PROVIDER_MESSAGE = 2_000
#: A run of this many characters of the key, anywhere in a message, is masked too (a provider that
#: echoes part of it); a key shorter than :data:`_FRAGMENT_MIN_KEY` is masked whole only.
_FRAGMENT = 10
_FRAGMENT_MIN_KEY = 16


@functools.lru_cache(maxsize=64)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    """What masks ``secret`` in a message: the key in any case, percent-encoded, and any
    :data:`_FRAGMENT` characters of it."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret)}
    if len(secret) >= _FRAGMENT_MIN_KEY:
        forms |= {secret[i : i + _FRAGMENT] for i in range(len(secret) - _FRAGMENT + 1)}
    return re.compile("|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True)), re.IGNORECASE)


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret`` in it (a provider may echo the key it was given, or part of it, in
    another case or percent-encoded), cut to :data:`MAX_PROVIDER_MESSAGE` characters."""
    if secret and len(secret) >= 8:
        text = _secret_pattern(secret).sub("***", text)
    if len(text) > MAX_PROVIDER_MESSAGE:
        text = text[:MAX_PROVIDER_MESSAGE] + "… (cut)"
    return text


def _parts(body: Any) -> tuple[Any, Any]:
    """The message and code of a provider's JSON error body (OpenAI's or Anthropic's shape)."""
    if not isinstance(body, dict):
        return None, None
    inner = body.get("error")
    if isinstance(inner, dict):
        return body.get("message") or inner.get("message"), inner.get("code")
    return body.get("message") or inner, body.get("code")


def _code(code: Any, message: str) -> str | None:
    if isinstance(code, str) and _PLAIN_CODE.fullmatch(code):
        return code
    return "context_length_exceeded" if _TOO_LONG.search(message) else None


def retry_after_s(headers: Mapping[str, str] | None) -> int | None:
    """A ``Retry-After`` in whole seconds (1 … :data:`MAX_RETRY_AFTER_S`); an HTTP date or junk is None."""
    raw = (headers or {}).get("retry-after") or (headers or {}).get("Retry-After")
    try:
        seconds = float(raw) if raw else None
    except ValueError:
        return None
    if seconds is None or seconds != seconds:  # NaN
        return None
    return min(MAX_RETRY_AFTER_S, max(1, int(-(-seconds // 1))))


def http_refusal(status: int, body: bytes, headers: Mapping[str, str] | None, secret: str) -> ProviderError:
    """A provider's HTTP error answer (the OpenAI-compatible adapter reads it itself)."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    message, code = _parts(parsed)
    if not isinstance(message, str) or not message:
        message = body.decode("utf-8", "replace").strip()[:500] or f"HTTP {status}"
    text = f"The provider answered {status}: " + redact(message, secret)
    return ProviderError(text, status, _code(code, message), retry_after_s(headers))


def sdk_refusal(exc: Exception, secret: str) -> ProviderError:
    """An SDK's exception for a call that failed before any output (the Anthropic adapter)."""
    response = getattr(exc, "response", None)
    message = provider_message(exc, secret)
    _, code = _parts(getattr(exc, "body", None))
    headers = getattr(response, "headers", None)
    return ProviderError(message, getattr(exc, "status_code", None), _code(code, message), retry_after_s(headers))


def provider_message(exc: Exception, secret: str) -> str:
    """The provider's own error message, from the JSON error body when it has one."""
    message, _ = _parts(getattr(exc, "body", None))
    if not isinstance(message, str) or not message:
        message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    status = getattr(exc, "status_code", None)
    prefix = f"The provider answered {status}: " if status else "The provider call failed: "
    return prefix + redact(str(message), secret)


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
