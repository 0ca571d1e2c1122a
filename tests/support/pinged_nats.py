"""A NATS connection for unit tests of what probes NATS (:func:`servicekit.health.nats_answers`)."""

from __future__ import annotations

import asyncio


class PingedNats:
    """Looks connected; the server answers its PINGs only while ``answering``. Otherwise a PING fails
    after ``stall_s`` (as on a connection that breaks), so that a test need not wait out the probe's
    timeout. ``asked`` counts the PINGs."""

    is_connected = True

    def __init__(self, *, answering: bool = False, stall_s: float = 0.0) -> None:
        self.answering = answering
        self.stall_s = stall_s
        self.asked = 0

    async def _send_ping(self, pong: asyncio.Future[bool]) -> None:
        self.asked += 1
        if not self.answering:
            await asyncio.sleep(self.stall_s)
            raise ConnectionResetError
        pong.set_result(True)
