"""``python -m switchboard_cli`` and the ``switchboard`` console script."""

from __future__ import annotations

from .app import build_app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
