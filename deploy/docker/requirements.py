"""Print the third-party requirements of some workspace packages, one per line, for an image build.

    python requirements.py libs/contracts libs/servicekit services/gateway > requirements.txt
    pip install -c constraints.txt -r requirements.txt

The Dockerfiles run it on the packages' ``pyproject.toml`` files alone, before any source is
copied, so the dependency layer is rebuilt only when a dependency list or a pin changes. The
workspace's own packages (``switchboard-*``) are left out: they are installed from source after.
Standard library only: it runs on the bare base image.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

WORKSPACE_PREFIX = "switchboard-"


def requirements(package_dirs: list[str]) -> list[str]:
    """The sorted, de-duplicated ``[project].dependencies`` of ``package_dirs``, workspace packages excluded."""
    found: set[str] = set()
    for directory in package_dirs:
        with (Path(directory) / "pyproject.toml").open("rb") as f:
            project = tomllib.load(f)["project"]
        for requirement in project.get("dependencies", []):
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0]
            if not name.lower().startswith(WORKSPACE_PREFIX):
                found.add(requirement)
    return sorted(found, key=str.lower)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: requirements.py PACKAGE_DIR...", file=sys.stderr)
        return 2
    print("\n".join(requirements(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
