"""The gateway's one log line for a failed run: request id (on every record, see
:mod:`servicekit.requestid`), run id, user, agent, provider and the cause the runner reported.

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


def failed(run_id: str, error: ErrorInfo, detail: str | None) -> None:
    """Log a failed run once, with what the client was told and the technical cause."""
    about = _about.get()
    if about is None or about.run_id != run_id:
        about = RunAbout(run_id, "?", "?", "?")
    log.warning(
        "run %s failed: user=%s agent=%s provider=%s status=%s code=%s error=%r cause=%r",
        run_id,
        about.user_id,
        about.agent_id,
        about.provider,
        error.status,
        error.code,
        error.message,
        detail,
    )
