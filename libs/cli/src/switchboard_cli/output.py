"""Printing answers: JSON by default, a plain text table with ``--table``."""

from __future__ import annotations

import json
from typing import Any

import typer


def emit(value: Any, *, table: bool) -> None:
    """Print an answer (a resource, a list page, or ``None``) to stdout."""
    if value is None:
        return
    typer.echo(render_table(value) if table else json.dumps(value, indent=2, ensure_ascii=False))


def render_table(value: Any) -> str:
    """A list page as rows (one column per field), a single resource as field/value pairs."""
    if isinstance(value, dict) and value.get("object") == "list" and isinstance(value.get("data"), list):
        rows = [r for r in value["data"] if isinstance(r, dict)]
        if not rows:
            return "(no items)"
        columns: list[str] = []
        for row in rows:
            columns.extend(k for k in row if k not in columns and k != "object")
        return _grid(columns, [[_cell(row.get(c)) for c in columns] for row in rows])
    if isinstance(value, dict):
        return _grid(["field", "value"], [[k, _cell(v)] for k, v in value.items()])
    return _cell(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)
