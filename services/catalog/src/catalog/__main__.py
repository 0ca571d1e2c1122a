"""``python -m catalog``: run the catalog until SIGTERM/SIGINT, then drain and exit 0.

``python -m catalog migrate [--wait-s N]`` brings its schema to head and exits (0, or 1 on failure),
after waiting up to N seconds for PostgreSQL to answer: the chart's pre-install/pre-upgrade Job runs it,
and the service started with ``CATALOG_MIGRATE_ON_START=false`` waits for what it did.

The start-up and the signals are every service's (:func:`servicekit.runtime.run_service`); see
:mod:`catalog.app` for why not FastStream's own runner.
"""

from __future__ import annotations

import argparse
import sys

import uvloop

from servicekit.db import run_migrations
from servicekit.runtime import run_service
from servicekit.telemetry import setup_logging

from .app import create_app
from .db import migrate
from .settings import CatalogSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="catalog")
    sub = parser.add_subparsers(dest="command")
    mig = sub.add_parser("migrate", help="bring the catalog's schema to head, then exit")
    mig.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for PostgreSQL to answer")
    args = parser.parse_args(argv)
    settings = CatalogSettings()
    if args.command == "migrate":
        setup_logging(settings.log_level)
        return run_migrations("catalog", settings.database_url, args.wait_s, migrate)
    return run_service("catalog", settings, lambda: create_app(settings).running(), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
