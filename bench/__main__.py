"""``make bench``: every benchmark, printed as one report (see docs/performance.md for recorded runs).

``python -m bench [--quick] [--only stack|auth|billing|capacity] [--streams N]``. The load generator shares the 2-core
machine with what it measures; every "added" figure compares with the fake LLM called directly in
the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from typing import Any


def _fmt(results: dict[str, Any]) -> str:
    return json.dumps(_round(results), indent=2, default=str)


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 3)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    return obj


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "at": time.strftime("%Y-%m-%d %H:%M")},
        "note": "the load generator runs on the same machine as the stack",
    }
    if args.only in (None, "auth"):
        from . import auth_bench
        from .stack_bench import _infra

        report["auth"] = await auth_bench.run(redis_url=_infra()["redis"])
        print(_fmt({"auth": report["auth"]}), flush=True)
    if args.only in (None, "stack"):
        from . import stack_bench

        report["stack"] = await stack_bench.run(quick=args.quick)
        print(_fmt({"stack": report["stack"]}), flush=True)
    if args.only in (None, "capacity"):
        from . import capacity_bench

        report["capacity"] = await capacity_bench.run(quick=args.quick, streams=args.streams)
        print(_fmt({"capacity": report["capacity"]}), flush=True)
    if args.only in (None, "billing"):
        try:
            from . import billing_bench
        except ImportError:
            report["billing"] = "not available"
        else:
            from .stack_bench import _infra

            infra = _infra()
            if infra["nats"] and infra["postgres"]:
                report["billing"] = await billing_bench.run(infra["nats"], infra["postgres"])
            else:
                report["billing"] = "needs NATS and PostgreSQL (NATS_URL, TEST_DATABASE_URL)"
        print(_fmt({"billing": report["billing"]}), flush=True)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--only", choices=["stack", "auth", "billing", "capacity"])
    parser.add_argument("--streams", type=int, default=5000, help="capacity: streams open at once (default 5000)")
    asyncio.run(main(parser.parse_args()))
