"""``python -m billing`` runs the service; ``python -m billing reconcile`` compares USAGE with the ledger.

The service starts and stops as every service does (:func:`servicekit.runtime.run_service`): on
SIGTERM/SIGINT it stops answering, finishes (commits and acks) the usage batch in hand and exits 0.
``reconcile`` is a one-shot command, not a service: it runs to its end on a plain event loop.
``python -m billing migrate [--wait-s N]`` brings billing's schema to head and exits (0, or 1 on
failure), after waiting up to N seconds for PostgreSQL to answer: the chart's pre-install/pre-upgrade
Job runs it, and the service started with ``BILLING_MIGRATE_ON_START=false`` waits for what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop

from servicekit.db import run_migrations
from servicekit.runtime import run_service
from servicekit.telemetry import setup_logging

from .app import BillingApp
from .db import migrate
from .settings import BillingSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billing")
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("reconcile", help="compare the USAGE stream with the ledger; exit 1 on any difference")
    rec.add_argument("--quiet", action="store_true")
    mig = sub.add_parser("migrate", help="bring billing's schema to head, then exit")
    mig.add_argument("--wait-s", type=float, default=120.0, help="how long to wait for PostgreSQL to answer")
    args = parser.parse_args(argv)
    settings = BillingSettings()
    if args.command == "reconcile":
        from .reconcile import reconcile

        setup_logging(settings.log_level)
        return asyncio.run(reconcile(settings, quiet=args.quiet))
    if args.command == "migrate":
        setup_logging(settings.log_level)
        return run_migrations("billing", settings.database_url, args.wait_s, migrate)
    return run_service("billing", settings, lambda: BillingApp(settings).running(), loop_factory=uvloop.new_event_loop)


if __name__ == "__main__":
    sys.exit(main())
