"""Regression: errors PostgreSQL sends while it shuts down or starts up reach the unit of work
wrapped by SQLAlchemy's asyncpg adapter (a ``DBAPIError`` whose ``orig`` is the adapter's
generic ``Error``); they must count as an outage (503), not as a bug (500). Found by
``test_faults.py::test_postgres_outage_answers_503_and_recovers``."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from arcana.adapters.database import is_connectivity_error, is_unstorable_text

pytestmark = pytest.mark.reliability


class Error(Exception):
    """Shaped like SQLAlchemy's ``AsyncAdapt_asyncpg_dbapi.Error``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.sqlstate = getattr(cause, "sqlstate", None)
        self.__cause__ = cause


def wrapped(cause: BaseException) -> DBAPIError:
    return DBAPIError("SELECT 1", {}, Error(cause))


@pytest.mark.parametrize(
    "cause",
    [
        asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator"),
        asyncpg.exceptions.CrashShutdownError("crash"),
        asyncpg.exceptions.TooManyConnectionsError("too many clients"),
        asyncpg.exceptions.ConnectionFailureError("connection failure"),
    ],
)
def test_shutdown_and_startup_states_are_outages(cause: BaseException) -> None:
    assert is_connectivity_error(wrapped(cause))


@pytest.mark.parametrize(
    "cause",
    [
        asyncpg.exceptions.UniqueViolationError("duplicate key"),
        asyncpg.exceptions.UndefinedColumnError("no such column"),
        asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence 0x00"),
    ],
)
def test_statement_errors_are_not_outages(cause: BaseException) -> None:
    assert not is_connectivity_error(wrapped(cause))


def test_nul_in_text_is_bad_input() -> None:
    nul = asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence 0x00")
    assert is_unstorable_text(wrapped(nul))
    assert is_unstorable_text(nul)  # from a statement run on the driver directly
    assert not is_unstorable_text(wrapped(asyncpg.exceptions.UniqueViolationError("dup")))
    assert not is_unstorable_text(asyncpg.exceptions.UniqueViolationError("dup"))
