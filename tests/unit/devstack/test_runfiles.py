"""make run's kept files and examples: ``<run_dir>/env`` round-trips with mode 0600, ``ADMIN_TOKEN``
in the environment wins over the kept token, and the README shows the examples ``make run`` prints."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from devstack.__main__ import config_from_env
from devstack.examples import CURL_EXAMPLE, PYTHON_EXAMPLE
from devstack.runfiles import RunEnv, read_env_file, write_env_file

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[3] / "README.md"
ENV = RunEnv(base_url="http://127.0.0.1:8080/v1", api_key="sk-a'b c", agent_id="agent_1", admin_token="tok-1")


def test_env_file_round_trips_with_owner_only_mode(tmp_path: Path) -> None:
    path = tmp_path / "env"
    path.write_text("old")
    path.chmod(0o644)
    assert write_env_file(tmp_path, ENV) == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_env_file(path) == dict(ENV.items())
    assert read_env_file(tmp_path / "absent") == {}


def test_admin_token_from_the_environment_wins_over_the_kept_one(tmp_path: Path) -> None:
    assert config_from_env({"ADMIN_TOKEN": "chosen"}, tmp_path, admin_token="kept").admin_token == "chosen"
    assert config_from_env({}, tmp_path, admin_token="kept").admin_token == "kept"
    assert config_from_env({}, tmp_path).admin_token not in ("", "kept")


def test_readme_shows_the_printed_examples() -> None:
    readme = README.read_text()
    assert f"```python\n{PYTHON_EXAMPLE}```" in readme
    assert f"```sh\n{CURL_EXAMPLE}```" in readme
