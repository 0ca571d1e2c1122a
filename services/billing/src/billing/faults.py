"""Is a failed database write the data's fault, or the database's? Pure (no I/O).

The consumer and the request handlers act on the answer:

- ``DATA`` — the values were refused (SQLSTATE class 22 "data exception": too long, NUL, out of
  range; class 23 "integrity" but for a unique violation; class 54 "program limit exceeded"), or
  a driver refused to send them (an integer too big for its type, text that is not UTF-8), or
  billing itself found them unstorable (:class:`billing.sanitize.Unstorable`). Trying the same
  values again fails again: the consumer isolates the record and parks it; a request gets a 400.
- ``TRANSIENT`` — the database is unreachable, restarting, out of resources, or a transaction lost
  a race (connection errors, SQLSTATE classes 08, 40, 53, 55, 57, 58, a unique violation between
  two replicas, :class:`billing.ledger.RacedError`) — or any other SQLSTATE: those are about the
  statement or the server (42 a missing table or privilege, XX an internal error), never about one
  record. The same write will succeed later (or after an operator's fix): the consumer naks the
  whole batch and retries it, as it always has.
- ``UNKNOWN`` — anything else: an exception of billing's own (a bug, most likely), which may be one
  record's doing. The consumer isolates the record but naks it (it is retried, never parked: a
  fixed bug bills it); a request gets a 500.

Every exception in the chain (``__cause__``, SQLAlchemy's ``orig``) is looked at: SQLAlchemy wraps
asyncpg's errors, which carry the SQLSTATE.
"""

from __future__ import annotations

import enum

from sqlalchemy import exc as sa_exc

from .ledger import RacedError
from .sanitize import Unstorable


class Fault(enum.Enum):
    DATA = "data"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"


UNIQUE_VIOLATION = "23505"
_DATA_CLASSES = frozenset({"22", "23", "54"})


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig`` and ``__cause__`` (never ``__context__``:
    an error raised while handling another, such as a failed rollback, is not that other's kind)."""
    out: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and all(e is not seen for seen in out):
        out.append(e)
        orig = getattr(e, "orig", None)
        e = orig if isinstance(orig, BaseException) and orig is not e else e.__cause__
    return out


def _sqlstate(e: BaseException) -> str | None:
    state = getattr(e, "sqlstate", None) or getattr(e, "pgcode", None)
    return state if isinstance(state, str) and len(state) == 5 else None


_DATA_TYPES = (Unstorable, UnicodeError, OverflowError, sa_exc.DataError)
_TRANSIENT_TYPES = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    OSError,  # ConnectionError, a refused connect while PostgreSQL restarts
    TimeoutError,
)


def classify(exc: BaseException) -> Fault:
    """See the module docstring. A SQLSTATE anywhere in the chain decides; else the types do."""
    chain = _chain(exc)
    for e in chain:
        state = _sqlstate(e)
        if state is None:
            continue
        if state == UNIQUE_VIOLATION:
            return Fault.TRANSIENT
        return Fault.DATA if state[:2] in _DATA_CLASSES else Fault.TRANSIENT
    for e in chain:
        if isinstance(e, _DATA_TYPES):
            return Fault.DATA
        if isinstance(e, (RacedError, *_TRANSIENT_TYPES)):
            return Fault.TRANSIENT
    return Fault.UNKNOWN


def describe(exc: BaseException) -> str:
    """The innermost error (the driver's) in a line: without SQLAlchemy's statement and parameters,
    which for a batch hold other users' records."""
    inner = _chain(exc)[-1]
    return f"{type(inner).__name__}: {str(inner).split(chr(10) + '[SQL:', 1)[0]}"
