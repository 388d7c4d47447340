"""Sign-in throttling: failed attempts per account and per network address, with lockout.

An account is locked for `lockout_seconds` after `max_failures` failed sign-ins within that
many seconds; an address after four times as many (many accounts tried from one place).
While locked, even the right password is refused (the answer must not tell a guesser that
the password was right). A successful sign-in clears the account's count. An administrator
lifts a lockout with `python -m fhir_server users unlock --username U` (or `--address A`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, delete, insert, select, update

from fhir_server.auth.auth_schema import login_attempts

ADDRESS_FACTOR = 4


@dataclass(frozen=True)
class Throttle:
    """The lockout policy (from settings)."""

    max_failures: int = 5
    lockout_seconds: int = 900


def account_key(username: str) -> str:
    return f"user:{username}"


def address_key(address: str) -> str:
    return f"addr:{address}"


def locked_for(conn: Connection, keys: list[str], now: float | None = None) -> int:
    """Seconds until the longest lockout among `keys` ends (0: none is locked)."""
    now = time.time() if now is None else now
    rows = conn.execute(select(login_attempts.c.locked_until)
                        .where(login_attempts.c.key.in_(keys))).all()
    return max([int(row.locked_until - now) for row in rows if row.locked_until > now],
               default=0)


def record_failure(conn: Connection, key: str, limit: int, policy: Throttle,
                   now: float | None = None) -> None:
    """Count one failure for `key`; lock it when the count reaches `limit` in the window."""
    now = int(time.time() if now is None else now)
    row = conn.execute(select(login_attempts).where(login_attempts.c.key == key)).first()
    if row is None:
        conn.execute(insert(login_attempts).values(key=key, failures=1, window_start=now,
                                                   locked_until=0))
        failures = 1
    elif now - row.window_start > policy.lockout_seconds:
        conn.execute(update(login_attempts).where(login_attempts.c.key == key)
                     .values(failures=1, window_start=now, locked_until=0))
        failures = 1
    else:
        failures = row.failures + 1
        conn.execute(update(login_attempts).where(login_attempts.c.key == key)
                     .values(failures=failures))
    if failures >= limit:
        conn.execute(update(login_attempts).where(login_attempts.c.key == key)
                     .values(locked_until=now + policy.lockout_seconds))


def clear(conn: Connection, key: str) -> bool:
    """Forget `key`'s failures and lockout (a successful sign-in, or an administrator);
    True when there was something to clear."""
    return bool(conn.execute(delete(login_attempts).where(login_attempts.c.key == key))
                .rowcount)
