"""The catalog's exceptions. Every one maps to an OpenAI error envelope (:class:`contracts.ErrorInfo`).

Tree::

    CatalogError              500 server_error (also the root: catch this at a handler edge)
    ├── BadRequest            400 invalid_request_error
    ├── Unauthorized          401 invalid_request_error / invalid_api_key
    ├── Forbidden             403 permission_error / access_denied
    ├── NotFound              404 invalid_request_error / not_found (model_not_found for agents)
    └── Conflict              409 invalid_request_error / conflict
"""

from __future__ import annotations

from contracts import ErrorInfo
from contracts.bounds import ID_MAX_LENGTH, text_problem


class CatalogError(Exception):
    """Root of every catalog error; on its own it is an internal error (500)."""

    status = 500
    type = "server_error"
    code: str | None = "internal_error"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def info(self) -> ErrorInfo:
        """The error as it crosses NATS."""
        return ErrorInfo(status=self.status, type=self.type, message=self.message, code=self.code, param=self.param)


class BadRequest(CatalogError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(CatalogError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(CatalogError):
    status = 403
    type = "permission_error"
    code = "access_denied"


class NotFound(CatalogError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class Conflict(CatalogError):
    status = 409
    type = "invalid_request_error"
    code = "conflict"


def plausible_id(value: str) -> bool:
    """Whether ``value`` could be a stored id (fits the id columns, storable text)."""
    return 0 < len(value) <= ID_MAX_LENGTH and text_problem(value) is None


def model_not_found(agent_id: str) -> NotFound:
    """The OpenAI answer for an agent the caller cannot see (missing or not theirs: the same answer)."""
    named = f" `{agent_id}`" if plausible_id(agent_id) else ""
    return NotFound(
        f"The model{named} does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )
