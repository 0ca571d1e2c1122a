"""A failed write: the data's fault (isolate and park), the database's (retry the batch), or unknown."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy import exc as sa_exc

from billing.faults import Fault, classify
from billing.ledger import RacedError
from billing.sanitize import Unstorable

pytestmark = pytest.mark.unit


def wrapped(orig: Exception, kind: type[sa_exc.DBAPIError] = sa_exc.DBAPIError) -> sa_exc.DBAPIError:
    """As SQLAlchemy raises it: the driver's error as ``orig`` and as the cause."""
    try:
        raise kind("INSERT ...", {}, orig) from orig
    except sa_exc.DBAPIError as exc:
        return exc


@pytest.mark.parametrize(
    "orig",
    [
        asyncpg.exceptions.StringDataRightTruncationError("value too long for type character varying(200)"),
        asyncpg.exceptions.CharacterNotInRepertoireError('invalid byte sequence for encoding "UTF8": 0x00'),
        asyncpg.exceptions.NumericValueOutOfRangeError("bigint out of range"),
        asyncpg.exceptions.DataError("invalid input for query argument $1: 2147483648 (value out of int32 range)"),
        asyncpg.exceptions.NotNullViolationError("null value in column"),
        asyncpg.exceptions.CheckViolationError("check"),
        asyncpg.exceptions.ProgramLimitExceededError("index row size exceeds maximum"),
    ],
)
def test_postgres_data_errors_are_the_datas_fault(orig: Exception) -> None:
    assert classify(wrapped(orig)) is Fault.DATA
    assert classify(orig) is Fault.DATA  # the admission path's raw asyncpg errors too


@pytest.mark.parametrize(
    "exc",
    [
        wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")),
        wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
        wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is shutting down")),
        wrapped(asyncpg.exceptions.SerializationError("could not serialize access")),
        wrapped(asyncpg.exceptions.DeadlockDetectedError("deadlock detected")),
        wrapped(asyncpg.exceptions.TooManyConnectionsError("too many clients")),
        wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),  # another replica won a race
        wrapped(asyncpg.exceptions.InterfaceError("connection is closed"), sa_exc.InterfaceError),
        wrapped(asyncpg.exceptions.LockNotAvailableError("could not obtain lock"), sa_exc.OperationalError),
        ConnectionRefusedError(111, "Connect call failed"),
        ConnectionError("the connection dropped after the commit"),
        TimeoutError(),
        RacedError("1 of 3 usage entries were already written"),
        wrapped(asyncpg.exceptions.UndefinedTableError('relation "billing.ledger" does not exist')),
        wrapped(asyncpg.exceptions.InsufficientPrivilegeError("permission denied")),
    ],
)
def test_outages_and_races_are_transient(exc: Exception) -> None:
    assert classify(exc) is Fault.TRANSIENT


def test_integrity_errors_other_than_unique_are_data() -> None:
    unique = asyncpg.exceptions.UniqueViolationError('duplicate key value violates unique constraint "uq_ledger_call"')
    not_null = asyncpg.exceptions.NotNullViolationError('null value in column "user_id"')
    foreign = asyncpg.exceptions.ForeignKeyViolationError("violates foreign key constraint")
    assert classify(wrapped(unique, sa_exc.IntegrityError)) is Fault.TRANSIENT
    assert classify(wrapped(not_null, sa_exc.IntegrityError)) is Fault.DATA
    assert classify(wrapped(foreign, sa_exc.IntegrityError)) is Fault.DATA


@pytest.mark.parametrize(
    "exc",
    [
        Unstorable("cost"),
        OverflowError("int too big to convert"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    ],
)
def test_values_a_driver_cannot_send_are_data(exc: Exception) -> None:
    assert classify(exc) is Fault.DATA


def test_a_sqlstate_in_the_chain_decides_over_the_wrapper_type() -> None:
    inner = asyncpg.exceptions.StringDataRightTruncationError("too long")
    assert classify(wrapped(inner, sa_exc.InterfaceError)) is Fault.DATA


def test_an_error_raised_while_handling_a_data_error_is_judged_on_its_own() -> None:
    try:
        try:
            raise wrapped(asyncpg.exceptions.StringDataRightTruncationError("too long"))
        except sa_exc.DBAPIError:
            raise ConnectionResetError("the rollback found the connection gone") from None
    except ConnectionResetError as exc:
        assert classify(exc) is Fault.TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [
        TypeError("a bug"),
        KeyError("user"),
        RuntimeError("?"),
    ],
)
def test_anything_else_is_unknown(exc: Exception) -> None:
    assert classify(exc) is Fault.UNKNOWN
