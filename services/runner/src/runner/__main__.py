"""``python -m runner``: run until SIGTERM/SIGINT, then drain (``RUNNER_DRAIN_S``) and exit 0.

The start-up and the signals are every service's (:func:`servicekit.runtime.run_service`).
"""

from __future__ import annotations

import sys

import uvloop

from servicekit.runtime import run_service

from .app import create_app
from .settings import RunnerSettings


def main() -> int:
    settings = RunnerSettings()
    return run_service("runner", settings, lambda: create_app(settings), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
