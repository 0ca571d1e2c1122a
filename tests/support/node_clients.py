"""Real JavaScript clients (the Vercel AI SDK, openai-node) driven from the end-to-end tests.

``tests/clients/package.json`` pins them, with its lock file; :func:`node_clients` installs them once
per session with ``npm ci`` (into ``tests/clients/node_modules``, ignored by git) and
:func:`run_node` runs an ES module script there against a gateway. Node.js and npm are required: their
absence fails the tests with the reason (a skipped real-client test would prove nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CLIENTS_DIR = Path(__file__).resolve().parents[1] / "clients"
#: Seconds an ``npm ci`` may take (a cold cache downloads a few MB).
_INSTALL_TIMEOUT_S = 300


def _missing(what: str) -> None:
    pytest.fail(f"{what} is required for the real-client tests and is not on PATH")


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """``tests/clients`` with its pinned packages installed; the directory scripts run in."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            _missing(tool)
    lock = CLIENTS_DIR / "package-lock.json"
    stamp = CLIENTS_DIR / "node_modules" / ".installed-lock"
    if not stamp.exists() or stamp.read_bytes() != lock.read_bytes():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENTS_DIR,
            check=True,
            timeout=_INSTALL_TIMEOUT_S,
        )
        stamp.write_bytes(lock.read_bytes())
    return CLIENTS_DIR


def run_node(clients_dir: Path, script: str, env: dict[str, str], timeout_s: float = 60) -> Any:
    """Run ``script`` (an ES module's source) with node in ``clients_dir``; the JSON it prints last.

    The script reads its settings from ``env`` (``process.env``) and prints one JSON document as its
    last line of output; a non-zero exit fails the test with node's output.
    """
    path = clients_dir / f".script-{os.getpid()}-{abs(hash(script))}.mjs"
    path.write_text(script)
    try:
        proc = subprocess.run(
            ["node", path.name],
            cwd=clients_dir,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)
    if proc.returncode != 0:
        pytest.fail(f"node exited with {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert lines, f"node printed nothing; stderr:\n{proc.stderr}"
    return json.loads(lines[-1])
