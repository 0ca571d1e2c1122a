"""The base every NATS message derives from."""

from __future__ import annotations

import itertools
import os
import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


def new_id(prefix: str = "") -> str:
    """A random, URL-safe identifier (128 bits), optionally prefixed (``run_…``)."""
    return f"{prefix}{secrets.token_hex(16)}"


_PROCESS = secrets.token_hex(8)
_COUNTER = itertools.count()


def _reseed() -> None:
    global _PROCESS, _COUNTER
    _PROCESS, _COUNTER = secrets.token_hex(8), itertools.count()


os.register_at_fork(after_in_child=_reseed)  # a forked child must not repeat its parent's ids


def event_id() -> str:
    """A unique event id: this process's random prefix and a counter. Event ids identify, they guard
    nothing, and an event is made per streamed token: no system call for randomness on that path."""
    return f"{_PROCESS}{next(_COUNTER):x}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """A frozen wire model. Readers ignore unknown fields, so adding an optional field keeps the version."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Message):
    """A message that records something that happened: it has an id and a timestamp."""

    id: str = Field(default_factory=event_id)
    ts: datetime = Field(default_factory=utcnow)
