"""The one object the lifespan puts on ``app.state.ctx``: every resource a request handler needs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from contracts import RunClosed, Subjects

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js import JetStreamContext

    from .auth import Authenticator, Requester
    from .fleet import RunnerWatch
    from .metrics import Metrics
    from .offers import RunOffers
    from .preadmit import PreAdmissions
    from .settings import GatewaySettings


class RateLimiterLike(Protocol):
    """What the gateway needs of a rate limiter: ``None`` to go ahead, else seconds to wait."""

    async def check(self, key_id: str, limit_per_minute: int) -> float | None: ...


@dataclass
class GatewayContext:
    """Resources owned by the app's lifespan (opened in order, closed in reverse)."""

    settings: GatewaySettings
    nc: Client
    js: JetStreamContext
    subjects: Subjects
    auth: Authenticator
    metrics: Metrics
    redis: Any | None = None
    rate_limiter: RateLimiterLike | None = None
    #: Request/reply to catalog and billing; defaults to NATS over ``nc`` (tests may inject a fake).
    rpc: Requester | None = None
    #: Runs admitted ahead of time (None: every request is admitted on its own).
    preadmitted: PreAdmissions | None = None
    #: Runs queued (or being admitted) whose runner has not said ``started`` yet.
    runs_starting: int = 0
    #: Offers runs to runners with room before queueing them (None: every run is queued).
    offers: RunOffers | None = None
    #: Which runners are alive (None: no watch; the idle timeout alone notices a dead runner).
    fleet: RunnerWatch | None = None
    #: Publishes a run's ``RunClosed`` (to release the hold of a run that was never queued).
    close_run: Callable[[RunClosed], Awaitable[None]] | None = None
    #: This process's id in its heartbeats (``gateway.heartbeat.v1``) and in the runs whose client
    #: waits here; empty: no heartbeat, runs go on whatever happens to this process.
    gateway_id: str = ""

    def __post_init__(self) -> None:
        if self.rpc is None:
            from .rpc import nats_requester

            self.rpc = nats_requester(self.nc)
