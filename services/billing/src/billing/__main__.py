"""``python -m billing`` runs the service; ``python -m billing reconcile`` compares USAGE with the ledger."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from servicekit.runtime import freeze_startup_heap
from servicekit.telemetry import setup_logging, setup_tracing

from .settings import BillingSettings

log = logging.getLogger("billing")


async def serve(settings: BillingSettings) -> None:
    from .app import BillingApp

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with BillingApp(settings).running():
        freeze_startup_heap()
        log.info("billing ready")
        await stop.wait()
    log.info("billing stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="billing")
    sub = parser.add_subparsers(dest="command")
    rec = sub.add_parser("reconcile", help="compare the USAGE stream with the ledger; exit 1 on any difference")
    rec.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    settings = BillingSettings()
    setup_logging(settings.log_level)
    if args.command == "reconcile":
        from .reconcile import reconcile

        return asyncio.run(reconcile(settings, quiet=args.quiet))
    setup_tracing("billing", settings.otlp_endpoint)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop

            uvloop.run(serve(settings))
        except ImportError:  # pragma: no cover
            asyncio.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
