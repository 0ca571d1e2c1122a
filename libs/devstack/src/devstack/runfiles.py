"""What ``make run`` keeps in its run directory for the user: ``env`` (the credentials) and ``example.py``.

``<run_dir>/env`` holds one ``export NAME=value`` line per variable — ``SWITCHBOARD_BASE_URL``,
``SWITCHBOARD_API_KEY``, ``SWITCHBOARD_AGENT``, ``ADMIN_TOKEN`` — so a shell can ``source`` it, and the
next start of the same run directory reads the admin token and the demo key back from it instead of
making new ones. It holds secrets, so it is written with mode 0600 (and made so when it already exists),
atomically, and nowhere else. ``<run_dir>/example.py`` is the printed Python example; it holds no secret
(it reads them from those variables).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

ENV_FILE = "env"
EXAMPLE_FILE = "example.py"

BASE_URL_VAR = "SWITCHBOARD_BASE_URL"
API_KEY_VAR = "SWITCHBOARD_API_KEY"
AGENT_VAR = "SWITCHBOARD_AGENT"
ADMIN_TOKEN_VAR = "ADMIN_TOKEN"  # noqa: S105 (a variable name, not a secret)


@dataclass(frozen=True)
class RunEnv:
    """The variables of ``<run_dir>/env``, in the order they are written."""

    base_url: str
    api_key: str
    agent_id: str
    admin_token: str

    def items(self) -> list[tuple[str, str]]:
        return [
            (API_KEY_VAR, self.api_key),
            (AGENT_VAR, self.agent_id),
            (BASE_URL_VAR, self.base_url),
            (ADMIN_TOKEN_VAR, self.admin_token),
        ]

    def exports(self) -> str:
        """``export NAME=value`` lines, values quoted for a POSIX shell."""
        return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in self.items())


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` assignments of a file written by :func:`write_env_file` ({} if absent)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue  # an unbalanced quote: a line we did not write
        if words[:1] != ["export"]:
            continue
        for word in words[1:]:
            name, sep, value = word.partition("=")
            if sep and name:
                found[name] = value
    return found


def _write_private(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` atomically; the file never exists with a wider mode than ``mode``."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # an older temporary file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            fd = -1
            f.write(text)
    finally:
        if fd >= 0:
            os.close(fd)
    os.replace(tmp, path)


def write_env_file(run_dir: Path, env: RunEnv) -> Path:
    """``<run_dir>/env``, mode 0600."""
    path = run_dir / ENV_FILE
    header = "# Switchboard: written by make run; `source` it. Secrets: keep it private (mode 0600).\n"
    _write_private(path, header + env.exports(), 0o600)
    return path


def write_example(run_dir: Path, text: str) -> Path:
    """``<run_dir>/example.py`` (no secrets in it)."""
    path = run_dir / EXAMPLE_FILE
    _write_private(path, text, 0o644)
    return path
