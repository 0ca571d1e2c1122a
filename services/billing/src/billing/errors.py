"""Billing's errors. ``BillingError`` (the root) carries the :class:`contracts.ErrorInfo` a caller receives:

- ``BadRequest`` — 400 invalid_request_error (bad body, a float amount, a price finer than 6 decimals)
- ``NotFound`` — 404
"""

from __future__ import annotations

from contracts import ErrorInfo


class BillingError(Exception):
    status = 500
    type = "server_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.info = ErrorInfo(status=self.status, type=self.type, message=message, param=param, code=code)


class BadRequest(BillingError):
    status = 400
    type = "invalid_request_error"


class NotFound(BillingError):
    status = 404
    type = "invalid_request_error"


def insufficient_quota(cost: str, available: str) -> ErrorInfo:
    return ErrorInfo(
        status=402,
        type="insufficient_quota",
        code="insufficient_quota",
        message=f"Insufficient balance: this request may cost up to {cost} credits and {available} are available.",
    )
