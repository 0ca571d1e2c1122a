"""Process-level tuning every service applies once it is ready."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move everything allocated so far (modules, SDKs, schemas, clients) out of the collector's reach.

    A service's startup heap is large and lives forever; left in the oldest generation, every full
    collection walks all of it again: pauses of 40–150 ms were measured under streaming load, each
    one a stall of every open stream. After :func:`gc.freeze` a full collection sees only what was
    allocated since. Call once, when the service is ready to serve.
    """
    gc.collect()
    gc.freeze()
