"""The gateway's exceptions, and how errors are rendered: always the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}``.

The tree::

    GatewayException         the root: every exception the gateway raises on purpose
    ├── GatewayError         one error answer: carries a contracts.ErrorInfo (status, type, message, code, param)
    ├── ServiceUnavailable   a request/reply dependency (catalog, billing) did not answer (rpc.call: 503)
    ├── RunStreamError       a run's event stream broke: an error chunk, or an error status before the headers
    └── ClientGone           the HTTP client disconnected while the gateway waited for its run

Anything else that escapes a handler becomes a 500 ``server_error``; FastAPI's validation errors become
400 ``invalid_request_error`` with ``param`` naming the field; Starlette's HTTP exceptions (unknown route,
wrong method) keep their status. Nothing ever answers 422 or a body that is not the envelope.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from contracts import ErrorInfo, problems

log = logging.getLogger(__name__)

INVALID_REQUEST = "invalid_request_error"
AUTHENTICATION = "authentication_error"
PERMISSION = "permission_error"
NOT_FOUND = "not_found_error"
RATE_LIMIT = "rate_limit_exceeded"
INSUFFICIENT_QUOTA = "insufficient_quota"
SERVER = "server_error"


class JSONResponse(Response):
    """A JSON response rendered with orjson (the envelope is small; this is the fast path for errors too)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class GatewayException(Exception):
    """The root of the gateway's own exceptions (the tree is in this module's docstring)."""


class ServiceUnavailable(GatewayException):
    """A request/reply dependency (catalog, billing) did not answer."""


class RunStreamError(GatewayException):
    """The run's event stream broke: rendered as an error chunk (or an error status before headers)."""

    def __init__(self, info: ErrorInfo, seq: int | None = None) -> None:
        super().__init__(info.message)
        self.info = info
        #: The event number the failure has in RUN_EVENTS, when it was stored there as the run's end
        #: (a lost runner's): a stream frames it with that id, as a retry replaying it does.
        self.seq = seq


class ClientGone(GatewayException):
    """The HTTP client disconnected while we waited for the run."""


class GatewayError(GatewayException):
    """An error answer. ``info`` is what the client sees; ``headers`` (e.g. ``Retry-After``) go with it.
    An ``info`` that says how long to wait (a run's busy provider) brings its own ``Retry-After``."""

    def __init__(self, info: ErrorInfo, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(info.message)
        self.info = info
        self.headers = with_retry_after(info, headers)

    @property
    def status(self) -> int:
        return self.info.status

    @classmethod
    def of(
        cls,
        status: int,
        message: str,
        type: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> GatewayError:
        return cls(ErrorInfo(status=status, type=type, message=message, code=code, param=param), headers)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None, code: str | None = None) -> GatewayError:
        return cls.of(400, message, INVALID_REQUEST, code, param)

    @classmethod
    def unavailable(
        cls, message: str, code: str = "service_unavailable", retry_after_s: int | None = None
    ) -> GatewayError:
        headers = {"Retry-After": str(retry_after_s)} if retry_after_s else None
        return cls.of(503, message, SERVER, code, headers=headers)


def openai_error(
    status: int,
    message: str,
    type: str,
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI error envelope response."""
    info = ErrorInfo(status=status, type=type, message=message, code=code, param=param)
    return JSONResponse(info.envelope(), status_code=status, headers=dict(headers or {}))


def error_response(info: ErrorInfo, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The envelope response of an :class:`contracts.ErrorInfo`."""
    return JSONResponse(info.envelope(), status_code=info.status, headers=with_retry_after(info, headers))


def with_retry_after(info: ErrorInfo, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers``, with ``Retry-After`` from ``info`` when it says how long to wait and they do not."""
    out = dict(headers or {})
    if info.retry_after_s is not None and "Retry-After" not in out:
        out["Retry-After"] = str(info.retry_after_s)
    return out


def param_from_loc(loc: Sequence[int | str]) -> str | None:
    """A pydantic error location as OpenAI names a parameter: ``("messages", 0, "role")`` → ``messages[0].role``."""
    return problems.param_from_loc(loc)


def describe_validation_error(errors: Sequence[Mapping[str, Any]]) -> tuple[str, str | None]:
    """The message and param of pydantic's errors: ``param`` names the first; one error keeps its plain
    message, several are all listed (:mod:`contracts.problems`)."""
    errors = problems.members_taken(errors)
    if not errors:
        return "Invalid request.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        if "recursion limit" in str(first.get("msg", "")):
            return "The JSON body of your request nests too deeply to be read.", None
        return "We could not parse the JSON body of your request.", None
    found = problems.from_pydantic(errors)
    param = found[0][0]
    if len(found) > 1:
        return problems.describe(found), param
    msg = found[0][1]
    if first.get("type") == "missing":
        return f"Missing required parameter: '{param}'.", param
    return (f"Invalid value for '{param}': {msg}." if param else f"Invalid request: {msg}."), param


_STATUS_TYPES = {
    400: INVALID_REQUEST,
    401: AUTHENTICATION,
    403: PERMISSION,
    404: INVALID_REQUEST,
    405: INVALID_REQUEST,
    413: INVALID_REQUEST,
    429: RATE_LIMIT,
}


async def _gateway_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return error_response(exc.info, exc.headers)


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    message, param = describe_validation_error(exc.errors())
    return openai_error(400, message, INVALID_REQUEST, None, param)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 405 and request.path_params:
        # The path fits a route only through its parameter (``POST /v1/responses/input_tokens`` fits
        # ``/v1/responses/{response_id}``): an endpoint not served, not a method to change.
        status = 404
    if status == 404 and exc.detail in ("Not Found", "Method Not Allowed"):
        message, code = f"Unknown request URL: {request.method} {request.url.path}.", "unknown_url"
    elif status == 405:
        message, code = f"Method {request.method} is not allowed for {request.url.path}.", "method_not_allowed"
    else:
        message, code = str(exc.detail), None
    type_ = _STATUS_TYPES.get(status, SERVER if status >= 500 else INVALID_REQUEST)
    headers = exc.headers if status == exc.status_code else None
    return openai_error(status, message, type_, code, None, headers)


async def _unhandled(_: Request, exc: Exception) -> Response:
    log.exception("unhandled error", exc_info=exc)
    return openai_error(500, "The server had an error while processing your request.", SERVER, "internal_error")


#: How each error a route raises on purpose is answered, by its class (the nearest in its MRO wins).
#: Anything else is a 500: :func:`_unhandled` outside a route, the observability middleware inside one.
HANDLERS: dict[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    GatewayError: _gateway_error,
    RequestValidationError: _validation_error,
    StarletteHTTPException: _http_error,
}


def handler_for(exc: Exception) -> Callable[[Request, Exception], Awaitable[Response]] | None:
    """The handler in :data:`HANDLERS` for ``exc``, or None when it is not an error raised on purpose."""
    for cls in type(exc).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    return None


def install_exception_handlers(app: FastAPI) -> None:
    """Render every error the app can raise as the OpenAI envelope."""
    for cls, handler in HANDLERS.items():
        app.add_exception_handler(cls, handler)
    app.add_exception_handler(Exception, _unhandled)
