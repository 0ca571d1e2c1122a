"""The base every NATS message derives from."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


def new_id(prefix: str = "") -> str:
    """A random, URL-safe identifier (128 bits), optionally prefixed (``run_…``)."""
    return f"{prefix}{secrets.token_hex(16)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Message(BaseModel):
    """A frozen wire model. Readers ignore unknown fields, so adding an optional field keeps the version."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class Event(Message):
    """A message that records something that happened: it has an id and a timestamp."""

    id: str = Field(default_factory=new_id)
    ts: datetime = Field(default_factory=utcnow)
