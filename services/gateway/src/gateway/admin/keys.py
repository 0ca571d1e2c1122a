"""API keys as the gateway makes them: the plaintext goes to the caller once, only its hash travels.

Pure: no framework, no I/O.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from contracts.catalog import hash_api_key

KEY_PREFIX = "sk-"
#: Random bytes per key (rendered as twice as many hex characters).
KEY_BYTES = 32
#: How many leading characters of a key the catalog keeps, so an operator can recognise it.
PREFIX_LENGTH = 8


@dataclass(frozen=True)
class NewKey:
    """A freshly made key. ``plaintext`` is hidden from ``repr`` so it never lands in a log by accident."""

    plaintext: str = field(repr=False)
    key_hash: str
    prefix: str


def make_key() -> NewKey:
    """``sk-`` + 64 hex characters, its SHA-256 hex digest and its first 8 characters."""
    plaintext = KEY_PREFIX + secrets.token_hex(KEY_BYTES)
    return NewKey(
        plaintext=plaintext,
        key_hash=hash_api_key(plaintext),
        prefix=plaintext[:PREFIX_LENGTH],
    )
