"""switchboard: the operators' command-line tool over the gateway's admin API."""

from .app import build_app
from .client import AdminClient, CliError

__all__ = ["AdminClient", "CliError", "build_app"]
