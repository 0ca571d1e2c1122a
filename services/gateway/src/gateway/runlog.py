"""The gateway's one log line for a failed run: request id (on every record, see
:mod:`servicekit.requestid`), run id, user, agent, provider, runner and the cause — the runner's own
report, or what the gateway saw (its runner lost, no runner in time, the idle timeout).

:func:`started` records what the run is about in a context variable when the run is queued, so the
place that sees the ``failed`` event (the run's event stream) needs no more than the event.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from dataclasses import dataclass

from contracts import ErrorInfo

log = logging.getLogger("gateway.runs")


@dataclass(frozen=True, slots=True)
class RunAbout:
    run_id: str
    user_id: str
    agent_id: str
    provider: str


_about: ContextVar[RunAbout | None] = ContextVar("gateway_run_about", default=None)


def started(run_id: str, user_id: str, agent_id: str, provider: str) -> None:
    """Remember the run the current request started (for :func:`failed`)."""
    _about.set(RunAbout(run_id, user_id, agent_id, provider))


def current() -> RunAbout | None:
    """What :func:`started` recorded in this context (for a log line written outside the request's)."""
    return _about.get()


def failed(
    run_id: str, error: ErrorInfo, cause: str | None, *, runner_id: str | None = None, about: RunAbout | None = None
) -> None:
    """Log a failed run: what the client was told (status, code, message) and the technical ``cause``
    (the runner's ``RunFailed.detail``, or what the gateway saw: runner lost, a timeout, a bad event).
    The caller logs each run once (:class:`gateway.runs.RunStream`). ``about``: the run's, when the log
    line is written outside the request's context (a NATS callback)."""
    about = about or _about.get()
    if about is None or about.run_id != run_id:
        about = RunAbout(run_id, "?", "?", "?")
    log.warning(
        "run %s failed: user=%s agent=%s provider=%s runner=%s status=%s code=%s error=%r cause=%r",
        run_id,
        about.user_id,
        about.agent_id,
        about.provider,
        runner_id or "-",
        error.status,
        error.code,
        error.message,
        cause,
    )
