"""Which gateways are alive, so that a run whose client waited on a gateway that died is stopped.

Every gateway process publishes a heartbeat about once a second (``gateway.heartbeat.v1``,
:class:`contracts.fleet.GatewayHeartbeat`). A run whose client waits on one gateway carries that
gateway's id (``RunRequest.gateway_id``; none for a background response or a request with an
``Idempotency-Key``, which a retry may pick up on another gateway). A gateway heard and then silent
for ``lost_after_s`` (and at least two and a half of its own intervals) is taken for dead: its client
connections went with it, so the runner cancels its runs — billed for what they did — instead of
running them to the end for nobody. A gateway never heard from is never judged (one too old to send
heartbeats, or a runner that has only just started).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydantic import ValidationError

from contracts import GatewayHeartbeat

log = logging.getLogger(__name__)

#: A gateway not heard for this long is forgotten (it is gone for good, or restarted under a new id).
FORGET_AFTER_S = 600.0


class GatewayWatch:
    def __init__(self, lost_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lost_after_s = lost_after_s
        self._clock = clock
        #: gateway id → (last heard, its heartbeat interval)
        self._heard: dict[str, tuple[float, float]] = {}

    def on_heartbeat(self, data: bytes) -> None:
        try:
            beat = GatewayHeartbeat.model_validate_json(data)
        except ValidationError:
            log.warning("ignored a malformed gateway heartbeat")
            return
        self._heard[beat.gateway_id] = (self._clock(), beat.interval_s)

    def lost(self, gateway_id: str) -> bool:
        """Whether ``gateway_id`` was heard and has been silent too long since."""
        heard = self._heard.get(gateway_id)
        if heard is None:
            return False
        at, interval_s = heard
        return self._clock() - at > max(self.lost_after_s, 2.5 * interval_s)

    def forgive(self) -> None:
        """This runner could not hear (cut off from NATS, its loop stalled): every gateway's clock
        starts again."""
        now = self._clock()
        for gateway_id, (at, interval_s) in self._heard.items():
            self._heard[gateway_id] = (max(at, now), interval_s)

    def forget_old(self) -> None:
        now = self._clock()
        for gateway_id, (at, _) in list(self._heard.items()):
            if now - at > FORGET_AFTER_S:
                del self._heard[gateway_id]
