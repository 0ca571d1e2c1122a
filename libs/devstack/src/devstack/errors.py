"""Errors of the development stack.

``DevstackError`` is the root; ``StackError`` (a process did not start or become ready) and
``SeedError`` (the admin API refused a seeding call) derive from it.
"""

from __future__ import annotations


class DevstackError(Exception):
    """Root of every devstack error."""


class StackError(DevstackError):
    """A stack process failed to start, exited early, or did not become ready in time."""


class SeedError(DevstackError):
    """The admin API answered a seeding call with an error."""
