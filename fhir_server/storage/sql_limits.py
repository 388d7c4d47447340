"""Time limits on a request's SQL and what a database says when a query is too much.

`time_limited` bounds the statements run inside it by the request budget's time: on SQLite
with a progress handler that interrupts the statement at the deadline; on PostgreSQL the
server's connections carry `statement_timeout` = the request time budget (storage/db.py: no
extra statement per search), and the budget is checked between statements.
`too_costly_sql` turns the database's "this query is too big or took too long" errors into
the request budget's 422 / 400 instead of a 500.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from fhir_server.budget import RequestBudget, too_costly
from fhir_server.errors import FhirError

# SQLite: the statement was interrupted (our progress handler), or is too complex to parse.
_SQLITE_TIME = ("interrupted",)
_SQLITE_TOO_COMPLEX = ("parser stack overflow", "expression tree is too large",
                       "too many sql variables", "too many terms in compound select")
# PostgreSQL SQLSTATEs: query_canceled (statement_timeout); statement_too_complex,
# program_limit_exceeded and stack depth limit exceeded.
_PG_TIME = ("57014",)
_PG_TOO_COMPLEX = ("54001", "54000", "54011", "54023")
_PROGRESS_STEPS = 20000  # SQLite VM steps between deadline checks (well under 1 ms)


@contextmanager
def time_limited(conn: Connection, budget: RequestBudget | None,
                 expression: str | list[str] | None = None) -> Iterator[None]:
    """Run the block's statements within the time `budget` has left."""
    if budget is None:
        yield
        return
    left = budget.seconds_left()
    if left <= 0:
        raise budget.timed_out(expression)
    if conn.dialect.name != "sqlite":
        with too_costly_sql(budget, expression):
            yield
        return
    raw = conn.connection.driver_connection
    deadline = budget.deadline
    raw.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
    try:
        with too_costly_sql(budget, expression):
            yield
    finally:
        raw.set_progress_handler(None, 0)


@contextmanager
def too_costly_sql(budget: RequestBudget | None, expression: str | list[str] | None = None
                   ) -> Iterator[None]:
    """Map the database's time-out and too-complex errors to FHIR errors."""
    try:
        yield
    except DBAPIError as exc:
        kind = classify(exc)
        if kind == "time":
            raise (budget.timed_out(expression) if budget is not None else
                   too_costly("The query took too long; narrow the search", expression)
                   ) from None
        if kind == "complex":
            raise FhirError(400, "too-costly", "The search is too complex for the database: "
                            "use fewer chained parameters, _has levels or OR-ed values",
                            expression) from None
        raise


def classify(exc: DBAPIError) -> str | None:
    """'time', 'complex' or None for a database error."""
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate:
        if sqlstate in _PG_TIME:
            return "time"
        if sqlstate in _PG_TOO_COMPLEX:
            return "complex"
        return None
    message = str(orig).lower()
    if any(m in message for m in _SQLITE_TIME):
        return "time"
    if any(m in message for m in _SQLITE_TOO_COMPLEX):
        return "complex"
    return None
