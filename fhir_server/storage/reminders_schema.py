"""The patient reminder queue (on the shared `metadata`). Times are epoch seconds.

One row per reason and subject (`referral-accepted` + `Task/<referral>`, `task-due` +
`Task/<patient task>`), written in the same transaction as the Task write that calls for
it, so a reminder is never lost and never queued twice. The worker sends it once it is due,
outside quiet hours, over each channel the patient wants (`channels` records those done).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text, UniqueConstraint

from fhir_server.storage.schema import metadata

reminders = Table(
    "patient_reminders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reason", String(32), nullable=False),  # referral-accepted | task-due
    Column("subject", String(128), nullable=False),  # Task/<id>
    Column("patient", String(128), nullable=False),  # Patient/<id>
    Column("due", BigInteger, nullable=False),  # not before
    Column("status", String(16), nullable=False),  # pending | sending | sent | skipped | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("channels", Text, nullable=False, default=""),  # channels sent: "email,sms"
    Column("note", Text, nullable=True),  # why skipped, or the last failure
    Column("claimed_until", BigInteger, nullable=False, default=0),
    Column("created", BigInteger, nullable=False),
    Column("sent", BigInteger, nullable=True),
    UniqueConstraint("reason", "subject", name="uq_patient_reminders_reason_subject"),
)
Index("ix_patient_reminders_due", reminders.c.status, reminders.c.due)
