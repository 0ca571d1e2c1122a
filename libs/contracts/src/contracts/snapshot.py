"""Committed copies of every wire model's JSON schema and of the AsyncAPI document of every subject,
so that a change to the wire is a reviewed change.

``python -m contracts.snapshot --write`` (``make contracts``) regenerates ``libs/contracts/schemas/`` and
``libs/contracts/asyncapi.json`` (:mod:`contracts.asyncapi`); ``tests/unit/test_contract_schemas.py``
and ``tests/unit/test_asyncapi.py`` compare the contracts against those copies.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

import contracts
from contracts import asyncapi
from contracts.events import RUN_EVENT

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


def wire_models() -> dict[str, Any]:
    """Name → JSON schema of every public wire model (and the run-event union)."""
    out: dict[str, Any] = {}
    for info in pkgutil.iter_modules(contracts.__path__):
        if info.name.startswith("_") or info.name in ("snapshot", "asyncapi"):
            continue
        module = importlib.import_module(f"contracts.{info.name}")
        for name, obj in vars(module).items():
            if (
                isinstance(obj, type)
                and issubclass(obj, BaseModel)
                and obj.__module__ == module.__name__
                and not name.startswith("_")
            ):
                out[name] = obj.model_json_schema(mode="serialization")
    out["RunEvent"] = RUN_EVENT.json_schema(mode="serialization")
    return out


def render(schema: Any) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="rewrite the committed schemas and AsyncAPI document")
    args = parser.parse_args()
    models = wire_models()
    if args.write:
        SCHEMA_DIR.mkdir(exist_ok=True)
        for old in SCHEMA_DIR.glob("*.json"):
            if old.stem not in models:
                old.unlink()
        for name, schema in models.items():
            (SCHEMA_DIR / f"{name}.json").write_text(render(schema))
        print(f"wrote {len(models)} schemas to {SCHEMA_DIR}")
        asyncapi.ASYNCAPI_PATH.write_text(asyncapi.render())
        print(f"wrote the AsyncAPI document to {asyncapi.ASYNCAPI_PATH}")
    else:
        for name in models:
            print(name)


if __name__ == "__main__":
    main()
