"""The ledger and balances in the database: every write that moves money, each in one transaction.

Invariant: for every account, ``balance`` equals the sum of its ledger ``amount``s, because both
change in the same transaction. ``reserved`` is the sum of its open reservations' ``remaining``.
Admission is one conditional UPDATE (``balance - reserved >= cost``), atomic in PostgreSQL, so
concurrent admissions can never reserve more than the balance.

Spend is a fact: a call's cost is debited in full even when it exceeds what its run still has
reserved (or the balance), so a balance can end below zero; only *admission* is refused (402).
Reservations are keyed by run; usage reduces its run's reservation, and ``RunClosed`` (which may
arrive before some of the run's records) releases the rest once all ``calls`` records are in.

Lock order everywhere: reservations (by run id), then accounts (sorted by user id). Every admission
updates its account row, so the consumer does all its other reads and writes first and touches the
account rows only in its last two statements before the commit (see :mod:`.usage`).

The modules, by role:

- :mod:`.api` — :class:`Ledger`, the one object the rest of billing uses;
- :mod:`.accounts` — opening, reading, crediting, refilling and moving accounts; an account's entries;
- :mod:`.reservations` — admission, holds made ahead, extension, expiry;
- :mod:`.usage` — usage batches applied (the consumer's half);
- :mod:`.settlement` — the arithmetic of a batch: what is charged, released and kept (pure);
- :mod:`.pricestore` — prices set through the admin API;
- :mod:`.sql` — the PostgreSQL statements; :mod:`.policy` — the settings the ledger follows.
"""

from .api import Ledger
from .policy import Policy
from .usage import RacedError

__all__ = ["Ledger", "Policy", "RacedError"]
