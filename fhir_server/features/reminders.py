"""Patient reminders wired into the write path: a Task write that calls for a reminder
(a referral accepted, a Task for the patient) queues it in the same transaction
(`fhir_server/reminders/rules.py`), so it is never lost nor queued twice. The worker sends
the queue (`fhir_server/reminders/sender.py`)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fhir_server.interactions.context import Services
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.reminders.rules import Cancel, Queue, reminder_changes
from fhir_server.storage import reminders_store as store
from fhir_server.storage.repository import StoredResource


def install(services: Services, registry: OperationRegistry) -> None:
    """Queue reminders after a Task write (no operations)."""
    services.phases.add("after-write", "reminders.queue", _after_write, order=700,
                        types={"Task"})


def _body(stored: StoredResource | None) -> dict | None:
    return stored.resource() if stored is not None and stored.body is not None else None


def _after_write(event: WriteEvent) -> None:
    new = event.stored
    if new is None:
        return
    now = datetime.now(UTC)
    for change in reminder_changes(_body(event.previous_stored), _body(new), now):
        if isinstance(change, Queue):
            store.queue(event.conn, change.reason, change.subject, change.patient,
                        int(change.due.timestamp()), int(time.time()))
        elif isinstance(change, Cancel):
            store.cancel(event.conn, change.reason, change.subject, change.note)
