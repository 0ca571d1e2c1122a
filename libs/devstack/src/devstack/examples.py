"""What ``make run`` prints once the stack is up: the values, ``export`` lines and examples that run as pasted.

The examples read the gateway, the key and the agent from ``SWITCHBOARD_BASE_URL``,
``SWITCHBOARD_API_KEY`` and ``SWITCHBOARD_AGENT`` (the README shows the same ones), and are printed
without indentation so that a paste into a shell or a Python prompt runs. :data:`PYTHON_EXAMPLE` is
also written to ``<run_dir>/example.py``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .runfiles import RunEnv

#: The printed (and README) Python example; the demo agent answers it with the calculator's result.
PYTHON_EXAMPLE = """\
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["SWITCHBOARD_BASE_URL"], api_key=os.environ["SWITCHBOARD_API_KEY"])
stream = client.chat.completions.create(
    model=os.environ["SWITCHBOARD_AGENT"],
    messages=[{"role": "user", "content": "What is 17*23?"}],
    stream=True,
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)

print()
"""

#: The printed (and README) curl example.
CURL_EXAMPLE = """\
curl -N "$SWITCHBOARD_BASE_URL/chat/completions" \\
  -H "Authorization: Bearer $SWITCHBOARD_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d "{\\"model\\": \\"$SWITCHBOARD_AGENT\\", \\"stream\\": true, \\"messages\\": [{\\"role\\": \\"user\\", \\"content\\": \\"Hello!\\"}]}"
"""  # noqa: E501 (one shell line, as long as it is)


def shown_path(path: Path | str) -> str:
    """``path`` relative to the working directory when it lies under it (``.run/env``), shell-quoted."""
    p = Path(path)
    with contextlib.suppress(ValueError):  # not under it: shown as given
        p = p.absolute().relative_to(Path.cwd())
    return shlex.quote(str(p))


def interpreter() -> str:
    """The Python that runs the stack (the virtualenv's): it has the ``openai`` SDK."""
    return shown_path(os.path.abspath(sys.executable))


@dataclass(frozen=True)
class Banner:
    """Everything the banner shows."""

    run_env: RunEnv
    user_id: str
    model: str
    logs_dir: Path
    env_file: Path
    example_file: Path
    token_from_env: bool
    token_kept: bool
    key_kept: bool
    fake_llm: bool
    #: Each service's health port (its /healthz, /readyz and /metrics), by name; the gateway's is its API.
    health: Mapping[str, str] = field(default_factory=dict)

    def _health_lines(self) -> str:
        """One line per service: where its /healthz, /readyz and /metrics answer."""
        if not self.health:
            return ""
        width = max(len(name) for name in self.health)
        lines = [f"    {name.ljust(width)}  {url}" for name, url in self.health.items()]
        return "  Health, readiness and metrics (/healthz, /readyz, /metrics):\n" + "\n".join(lines) + "\n"

    def render(self) -> str:
        e = self.run_env
        env_file = shown_path(self.env_file)
        if self.token_from_env:
            admin_note = "(from ADMIN_TOKEN)"
        else:
            admin_note = f"({'kept from' if self.token_kept else 'generated, kept in'} {env_file}; ADMIN_TOKEN wins)"
        key_note = f"({'kept from' if self.key_kept else 'new, kept in'} {env_file} while it works)"
        run_it = f"{interpreter()} {shown_path(self.example_file)}"
        if self.fake_llm:
            demo = (
                "The demo agent has the tools calculator and current_time. With the fake LLM, arithmetic\n"
                '("What is 17*23?") or the time ("What time is it?") makes the model call the tool, the\n'
                "runner execute it and the answer use its result; any other prompt is echoed."
            )
        else:
            demo = "The demo agent has the tools calculator and current_time."
        return f"""
Switchboard is running.

  Gateway (OpenAI API)  {e.base_url}
  Admin token           {e.admin_token}   {admin_note}
  Demo user             {self.user_id}
  Demo API key          {e.api_key}   {key_note}
  Demo agent (model)    {e.agent_id}   [{self.model}]
  Logs                  {self.logs_dir}
{self._health_lines()}
The admin token and the demo key stay the same across restarts of this run directory. Set the
variables in your shell (or: source {env_file}):

{e.exports()}
Stream an answer with curl:

{CURL_EXAMPLE}
Or with the openai Python SDK, in the virtualenv's Python (it has the SDK; the system python3 may not):

{PYTHON_EXAMPLE}
The same example is in {shown_path(self.example_file)}; run it with:

{run_it}

{demo}

Press Ctrl-C to stop.
"""
