"""Lint or render the Switchboard chart without a ``helm`` binary, through the pinned Helm SDK.

    python deploy/helm/chart.py lint [-f VALUES]...
    python deploy/helm/chart.py template [--name NAME] [--namespace NS] [-f VALUES]... [--set K=V]...

The ``helm-python-sdk`` development dependency binds Helm's own Go library (rendering, schema
validation and lint are Helm's code, not a re-implementation), so CI and a fresh checkout check the
chart exactly as ``helm lint`` / ``helm template`` would. With ``helm`` on PATH, use it directly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "switchboard"


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values files: maps merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_values(files: list[str], sets: list[str], set_strings: list[str]) -> dict[str, Any]:
    import helm_python as helm

    values: dict[str, Any] = {}
    for file in files:
        values = merge(values, yaml.safe_load(Path(file).read_text()) or {})
    for item in sets:
        values = merge(values, helm.parse_set_string(item))
    for item in set_strings:
        values = merge(values, helm.parse_set_string_values(item))
    return values


def render(values: dict[str, Any], name: str = "switchboard", namespace: str = "default") -> dict[str, str]:
    """Template path → rendered text, as ``helm template`` renders them (the schema is enforced)."""
    import helm_python as helm

    with helm.Chart.load(str(CHART)) as chart:
        return chart.render(values, name=name, namespace=namespace, is_install=True)


def lint(values: dict[str, Any]) -> list[str]:
    """Helm's lint findings of warning severity or worse, as ``[SEVERITY] path: message`` lines."""
    import helm_python as helm

    report = helm.lint(str(CHART), values, strict=True)
    names = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
    found = [f"[{names.get(m['severity'], m['severity'])}] {m['path']}: {m['error']}" for m in report["messages"]]
    return [line for line in found if not line.startswith("[INFO]")] + list(report.get("errors") or [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chart.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["lint", "template"])
    parser.add_argument("-f", "--values", action="append", default=[], help="a values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], help="K=V, as helm --set (repeatable)")
    parser.add_argument("--set-string", action="append", default=[], help="K=V, as helm --set-string")
    parser.add_argument("--name", default="switchboard", help="release name")
    parser.add_argument("--namespace", default="default")
    args = parser.parse_args(argv)
    import helm_python as helm

    try:
        return run(args)
    except helm.HelmError as exc:
        print(f"{CHART.name}: {exc}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    values = load_values(args.values, args.set, args.set_string)
    if args.command == "lint":
        problems = lint(values)
        render(values, args.name, args.namespace)  # lint reports template failures only as text
        for line in problems:
            print(line)
        print(f"{CHART.name}: {'FAILED' if problems else 'ok'} ({len(problems)} finding(s))")
        return 1 if problems else 0
    for path, text in sorted(render(values, args.name, args.namespace).items()):
        if text.strip() and not path.endswith("NOTES.txt"):
            print(f"---\n# Source: {path}\n{text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
