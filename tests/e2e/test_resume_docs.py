"""docs/resume.md's examples, run as written against the stack: the curl pair and the Python scripts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import StackHandle

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "resume.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)


def _env(e2e: StackHandle) -> dict[str, str]:
    # Not scripted, as make run's demo agent: the fake model calls the calculator, or echoes the prompt.
    agent = e2e.agent(tools=["calculator"])
    return {
        **os.environ,
        "SWITCHBOARD_BASE_URL": e2e.base_url,
        "SWITCHBOARD_API_KEY": e2e.seeded.api_key,
        "SWITCHBOARD_AGENT": agent.id,
    }


def test_the_curl_example_resumes_after_the_last_event_id(e2e: StackHandle) -> None:
    (script,) = _blocks("sh")
    out = subprocess.run(["bash", "-c", script], env=_env(e2e), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    whole, _, rest = out.stdout.partition("data: [DONE]\n\n")
    assert whole.startswith("id: 0\ndata: ") and rest.endswith("data: [DONE]\n\n")
    # The second answer is exactly the first one's frames after id 1.
    frames = [f + "\n\n" for f in (whole + "data: [DONE]").split("\n\n") if f]
    after = [f for f in frames if int(f.split("\n", 1)[0][4:]) > 1]
    assert rest == "".join(after)


def test_the_python_examples_run(e2e: StackHandle) -> None:
    script = "\n".join(_blocks("python"))
    out = subprocess.run([sys.executable, "-c", script], env=_env(e2e), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert "391" in lines[0]  # the SDK example's answer (the fake model's calculator tool)
    assert all(line.startswith("{") for line in lines[1:]) and len(lines) > 2  # the raw chunks
