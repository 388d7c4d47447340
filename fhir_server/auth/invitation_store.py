"""The SQL of patient invitations (`auth_invitations`): one-time codes, kept only as their
digest (`fhir_server/auth/invitations.py` holds the rules)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select, update

from fhir_server.auth.invitation_schema import invitations


def add_invitation(conn: Connection, *, code_hash: str, patient: str, language: str,
                   expires: int, now: int) -> None:
    conn.execute(insert(invitations).values(
        code_hash=code_hash, patient=patient, language=language, expires=expires, used=None,
        failures=0, created=now))


def invitation_row(conn: Connection, code_hash: str) -> Any | None:
    """The invitation row of this code digest (None: unknown)."""
    return conn.execute(select(invitations).where(invitations.c.code_hash == code_hash)).first()


def count_failure(conn: Connection, code_hash: str) -> None:
    """One more wrong date of birth for this invitation."""
    conn.execute(update(invitations).where(invitations.c.code_hash == code_hash)
                 .values(failures=invitations.c.failures + 1))


def spend(conn: Connection, code_hash: str, now: int) -> bool:
    """Mark the invitation used; False when it was already used (a race or a replay)."""
    spent = conn.execute(update(invitations).where(
        invitations.c.code_hash == code_hash, invitations.c.used.is_(None)).values(used=now))
    return bool(spent.rowcount)
