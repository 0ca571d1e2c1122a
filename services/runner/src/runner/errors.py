"""The runner's errors. One root, :class:`RunnerError`::

    RunnerError
    ├── RunError            a run cannot go on; carries the ErrorInfo its RunFailed shows the client
    ├── ConfigError         the runner's configuration is unusable (start-up fails)
    ├── ProviderError       the provider refused a call before any output (becomes a RunError: see
    │                       provider_failed)
    ├── StreamBroken        the provider's stream broke after output started (becomes RunError 502)
    └── BillingUnavailable  billing did not answer an extension (becomes RunError 503)

A tool's failure is not here: :class:`runner.tools.ToolError` goes back to the model as its result.
The ``ErrorInfo`` factories below are what the client sees for each case.
"""

from __future__ import annotations

from contracts import ErrorInfo


class RunnerError(Exception):
    """The root of the runner's exceptions."""


class RunError(RunnerError):
    """A run cannot go on; ``info`` is what ``RunFailed`` carries to the client, written for them;
    ``detail`` is the technical cause (a provider's own error), for logs only."""

    def __init__(self, info: ErrorInfo, detail: str | None = None, kind: str | None = None) -> None:
        super().__init__(info.message)
        self.info = info
        self.detail = detail
        #: What the failure is called in metrics (``error_type``), from a fixed set; None: its code.
        #: A provider's refusal keeps the provider's own code for the client, which no label may carry.
        self.kind = kind


class ConfigError(RunnerError):
    """The runner's configuration is unusable (bad ``RUNNER_CONNECTIONS``)."""


class ProviderError(RunnerError):
    """The provider refused the call before any output (an HTTP error, an unreachable host).

    ``message`` is the provider's own message; it never holds a key. ``status`` is its HTTP status
    (None: no answer), ``code`` its error code when it gave a plain one (``context_length_exceeded``),
    ``retry_after_s`` its ``Retry-After`` in seconds."""

    def __init__(
        self, message: str, status: int | None = None, code: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.retry_after_s = retry_after_s


class StreamBroken(RunnerError):
    """The provider's stream broke after output had started."""


class BillingUnavailable(RunnerError):
    """Billing did not answer (no responders, timeout, an unreadable reply)."""


def unknown_provider(name: str) -> RunError:
    return RunError(
        ErrorInfo(
            status=400,
            type="invalid_request_error",
            code="unknown_provider",
            message=f"The agent's provider connection {name!r} is not configured on this runner.",
        )
    )


#: Provider answers that mean the request itself was refused (a context too long, a bad argument):
#: trying it again cannot help, so the client gets a 400 rather than a 5xx its SDK would retry.
_REFUSED = frozenset({400, 413, 422})
#: Provider answers that mean "busy, try again later" (Anthropic's 529 is its "overloaded").
_BUSY = {429: (429, "rate_limit_exceeded"), 503: (503, "provider_unavailable"), 529: (503, "provider_unavailable")}
#: When a busy provider did not say how long to wait.
BUSY_RETRY_AFTER_S = 1


def provider_failed(exc: ProviderError) -> RunError:
    """What the client is told when the provider refused the call before any output. The provider's
    message is what the client needs to act on; its status decides the class of error, as OpenAI
    would answer it: a refused request is a 400 (with the provider's code, so that clients recognise
    ``context_length_exceeded``), a busy provider a 429 or 503 with ``Retry-After``. Anything else
    (a key or model the agent's connection has wrong, a provider fault, no answer) is a 502."""
    message = exc.message
    if exc.status in _REFUSED:
        code = exc.code or "provider_refused_request"
        info = ErrorInfo(status=400, type="invalid_request_error", code=code, message=message)
        return RunError(info, detail=message, kind="provider_refused_request")
    if exc.status in _BUSY:
        status, code = _BUSY[exc.status]
        type_ = "rate_limit_exceeded" if status == 429 else "server_error"  # as the gateway's own
        wait = exc.retry_after_s or BUSY_RETRY_AFTER_S
        info = ErrorInfo(status=status, type=type_, code=code, message=message, retry_after_s=wait)
        return RunError(info, detail=message, kind=code)
    info = ErrorInfo(status=502, type="server_error", code="provider_error", message=message)
    return RunError(info, detail=message, kind="provider_error")


#: What a client is told when the provider's stream breaks mid-answer; the provider's own error (a
#: transport exception's text, say) goes to the logs (``RunError.detail``), not to the client.
STREAM_BROKEN_MESSAGE = (
    "The connection to the model provider broke while the answer was being streamed, so the answer is "
    "incomplete. Try again; if it keeps happening, the provider may be having trouble."
)


def stream_broken(message: str) -> RunError:
    return RunError(
        ErrorInfo(status=502, type="server_error", code="provider_error", message=STREAM_BROKEN_MESSAGE),
        detail=message,
        kind="stream_broken",
    )


def gateway_lost() -> ErrorInfo:
    """Why a run whose gateway died was cancelled (:mod:`runner.gateways`; no client is left to read it)."""
    return ErrorInfo(
        status=502,
        type="server_error",
        code="gateway_lost",
        message="The gateway carrying this request's client stopped; the run was stopped and billed for what it did.",
    )


def admission_timeout() -> ErrorInfo:
    return ErrorInfo(
        status=503,
        type="server_error",
        code="admission_timeout",
        message="The run was never cleared to start (billing did not answer in time); try again shortly.",
    )


def queue_timeout() -> ErrorInfo:
    return ErrorInfo(
        status=503,
        type="server_error",
        code="queue_timeout",
        message="No runner picked up the request before its deadline.",
    )


def billing_unavailable() -> RunError:
    return RunError(
        ErrorInfo(
            status=503,
            type="server_error",
            code="billing_unavailable",
            message="Billing did not answer the reservation extension.",
        )
    )


def internal_error() -> ErrorInfo:
    return ErrorInfo(status=500, type="server_error", code="internal_error", message="The agent run failed.")


def client_cancelled() -> ErrorInfo:
    return ErrorInfo(status=499, type="cancelled", code="cancelled", message="The run was cancelled.")


def shutting_down() -> ErrorInfo:
    return ErrorInfo(status=503, type="server_error", code="runner_stopping", message="The runner is shutting down.")
