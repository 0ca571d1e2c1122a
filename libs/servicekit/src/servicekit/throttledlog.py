"""A log line that may repeat many times a second in an outage, written at most once per interval per
kind, with a count of those left out: enough to see the trouble, not a page of it per second."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: The same kind of line is written at most this often (seconds).
EVERY_S = 10.0


class ThrottledLog:
    """``log(level, kind, message, *args)``: the line, unless one of the same ``kind`` was written less
    than ``every_s`` ago (then it is counted, and the next one written says how many were left out)."""

    def __init__(
        self, logger: logging.Logger, every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._every_s = every_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._left_out: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._last.get(kind, -self._every_s) < self._every_s:
            self._left_out[kind] = self._left_out.get(kind, 0) + 1
            return
        if len(self._last) > 1_000:  # kinds are few; this only bounds a caller that makes them up
            self._last.clear()
            self._left_out.clear()
        self._last[kind] = now
        left_out = self._left_out.pop(kind, 0)
        if left_out:
            message += " (and %d more like it since the last such line)"
            args = (*args, left_out)
        self._logger.log(level, message, *args)
