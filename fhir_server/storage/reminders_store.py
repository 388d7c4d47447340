"""Reads and writes of the patient reminder queue (`reminders_schema.reminders`).

Writers queue and cancel inside the transaction of the Task write that calls for it; the
worker claims due rows (a lease, so two workers never send the same reminder and a crashed
one's rows come back), then finishes or reschedules them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, and_, insert, or_, select, update

from fhir_server.storage.reminders_schema import reminders

PENDING, SENDING, SENT, SKIPPED, FAILED = "pending", "sending", "sent", "skipped", "failed"


@dataclass(frozen=True)
class Reminder:
    id: int
    reason: str
    subject: str
    patient: str
    due: int
    status: str
    attempts: int
    channels: frozenset[str]
    note: str

    @classmethod
    def of(cls, row) -> Reminder:  # type: ignore[no-untyped-def]
        return cls(row.id, row.reason, row.subject, row.patient, int(row.due), row.status,
                   int(row.attempts), frozenset(c for c in (row.channels or "").split(",") if c),
                   row.note or "")


def queue(conn: Connection, reason: str, subject: str, patient: str, due: int,
          now: int) -> None:
    """Ask for a reminder (once per reason and subject). A pending one takes the new due
    time and patient; one already sent, skipped or failed stays as it is."""
    row = conn.execute(select(reminders.c.id, reminders.c.status).where(
        reminders.c.reason == reason, reminders.c.subject == subject)).first()
    if row is None:
        conn.execute(insert(reminders).values(
            reason=reason, subject=subject, patient=patient, due=due, status=PENDING,
            attempts=0, channels="", claimed_until=0, created=now))
    elif row.status == PENDING:
        conn.execute(update(reminders).where(reminders.c.id == row.id)
                     .values(due=due, patient=patient))


def cancel(conn: Connection, reason: str, subject: str, note: str) -> None:
    """A pending reminder that is no longer needed (the Task was done or closed)."""
    conn.execute(update(reminders).where(
        reminders.c.reason == reason, reminders.c.subject == subject,
        reminders.c.status == PENDING).values(status=SKIPPED, note=note))


def _claimable(now: int):  # type: ignore[no-untyped-def]
    return or_(and_(reminders.c.status == PENDING, reminders.c.due <= now),
               and_(reminders.c.status == SENDING, reminders.c.claimed_until < now))


def claim(conn: Connection, now: int, lease: int, limit: int = 100) -> list[Reminder]:
    """Take up to `limit` due reminders for `lease` seconds (rows another worker took
    first are left to it)."""
    ids = [r.id for r in conn.execute(select(reminders.c.id).where(_claimable(now))
                                      .order_by(reminders.c.due, reminders.c.id)
                                      .limit(limit)).all()]
    taken = []
    for rid in ids:
        done = conn.execute(update(reminders).where(reminders.c.id == rid, _claimable(now))
                            .values(status=SENDING, claimed_until=now + lease))
        if done.rowcount:
            taken.append(rid)
    if not taken:
        return []
    rows = conn.execute(select(reminders).where(reminders.c.id.in_(taken))
                        .order_by(reminders.c.due, reminders.c.id)).all()
    return [Reminder.of(r) for r in rows]


def finish(conn: Connection, rid: int, status: str, channels: frozenset[str], note: str,
           now: int) -> None:
    """Close a claimed reminder: sent, skipped or failed for good."""
    conn.execute(update(reminders).where(reminders.c.id == rid).values(
        status=status, channels=",".join(sorted(channels)), note=note or None,
        sent=now if status == SENT else None, claimed_until=0))


def reschedule(conn: Connection, rid: int, due: int, channels: frozenset[str], attempts: int,
               note: str) -> None:
    """Put a claimed reminder back for later (quiet hours, or a channel that failed)."""
    conn.execute(update(reminders).where(reminders.c.id == rid).values(
        status=PENDING, due=due, channels=",".join(sorted(channels)), attempts=attempts,
        note=note or None, claimed_until=0))


def reminders_of(conn: Connection, patient: str | None = None) -> list[Reminder]:
    """Every reminder (of one patient), oldest first: for administrators and tests."""
    query = select(reminders).order_by(reminders.c.id)
    if patient:
        query = query.where(reminders.c.patient == patient)
    return [Reminder.of(r) for r in conn.execute(query).all()]
