"""``python -m catalog``: run the catalog until SIGTERM/SIGINT, then drain and exit 0.

The start-up and the signals are every service's (:func:`servicekit.runtime.run_service`); see
:mod:`catalog.app` for why not FastStream's own runner.
"""

from __future__ import annotations

import sys

import uvloop

from servicekit.runtime import run_service

from .app import create_app
from .settings import CatalogSettings


def main() -> int:
    settings = CatalogSettings()
    return run_service("catalog", settings, lambda: create_app(settings).running(), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
