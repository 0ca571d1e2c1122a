"""The request id: one per client request, from the gateway's ``x-request-id`` to the runner's logs.

The id lives in a context variable (:data:`request_id`), set by the gateway's middleware for an HTTP
request and by the runner for the run it executes. :func:`install` makes every log record carry it as
``record.request_id`` (``-`` outside a request) through the log record factory, so records reach every
handler with it — pytest's ``caplog`` included — without each logger or handler being configured.
"""

from __future__ import annotations

import logging
import secrets
from contextvars import ContextVar
from typing import Any

#: The request the current task works for, or None outside one.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

#: The longest client-sent ``X-Request-ID`` kept; a longer or non-printable one is replaced.
MAX_LENGTH = 128
HEADER = "x-request-id"


def new_request_id() -> str:
    """A fresh id: ``req_`` and 24 hex digits."""
    return "req_" + secrets.token_hex(12)


def accept(value: str | None) -> str:
    """The client's id when it is 1–128 printable ASCII characters (no spaces), else a new one: an id
    that reaches logs and headers must not carry control characters or grow them without bound."""
    if value and len(value) <= MAX_LENGTH and value.isascii() and value.isprintable() and " " not in value:
        return value
    return new_request_id()


_installed = False


def install() -> None:
    """Give every log record of this process a ``request_id`` attribute (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.get() or "-"
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
