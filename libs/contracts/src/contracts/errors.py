"""Errors as they cross NATS: the fields of the OpenAI error envelope plus the HTTP status."""

from __future__ import annotations

from pydantic import Field

from ._base import Message


class ErrorInfo(Message):
    """An error a service reports to its caller; the gateway renders it as the OpenAI envelope.

    ``status`` is the HTTP status the gateway answers with (400, 401, 402, 403, 404, 409, 429, 500, 503).
    """

    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    #: Seconds the client should wait before trying again (a 429 or 503): the gateway's
    #: ``Retry-After`` header when it answers with this error's status. Not part of the envelope.
    retry_after_s: int | None = Field(default=None, ge=1, le=3600)

    def envelope(self) -> dict[str, dict[str, str | None]]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
