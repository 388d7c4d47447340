"""Which Task writes call for a patient reminder (pure: dicts in, changes out).

* `referral-accepted`: a referral Task (task-code `fulfill`) that becomes `accepted`: the
  patient learns that a provider will call.
* `task-due`: a Task for the patient (owned by the Patient it is for) that is open: due at
  `restriction.period.start` (at once when there is none). When such a Task is finished or
  closed before its reminder went out, the reminder is cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhir_server.workflow.task_rules import is_referral_task
from fhir_server.workflow.times import parse_instant

REFERRAL_ACCEPTED = "referral-accepted"
TASK_DUE = "task-due"
OPEN = frozenset({"requested", "received", "accepted", "ready", "in-progress"})


@dataclass(frozen=True)
class Queue:
    reason: str
    subject: str  # Task/<id>
    patient: str  # Patient/<id>
    due: datetime


@dataclass(frozen=True)
class Cancel:
    reason: str
    subject: str
    note: str


Change = Queue | Cancel


def patient_of(task: dict) -> str | None:
    ref = (task.get("for") or {}).get("reference")
    return ref if isinstance(ref, str) and ref.startswith("Patient/") else None


def is_patient_task(task: dict | None) -> bool:
    """A Task the patient is asked to do: owned by the Patient it is for."""
    if not task or is_referral_task(task):
        return False
    patient = patient_of(task)
    return patient is not None and (task.get("owner") or {}).get("reference") == patient


def _due(task: dict, now: datetime) -> datetime:
    start = parse_instant(((task.get("restriction") or {}).get("period") or {}).get("start"))
    return max(start, now) if start else now


def reminder_changes(previous: dict | None, new: dict | None, now: datetime) -> list[Change]:
    """The reminders to queue or cancel because `previous` became `new` (None: deleted)."""
    changes: list[Change] = []
    task = new or previous or {}
    subject = f"Task/{task.get('id')}"
    if new is not None and is_referral_task(new):
        patient = patient_of(new)
        was = (previous or {}).get("status")
        if patient and new.get("status") == "accepted" and was != "accepted":
            changes.append(Queue(REFERRAL_ACCEPTED, subject, patient, now))
        return changes
    if is_patient_task(new) and new is not None and new.get("status") in OPEN:
        changes.append(Queue(TASK_DUE, subject, patient_of(new) or "", _due(new, now)))
    elif is_patient_task(previous):
        status = (new or {}).get("status", "deleted")
        changes.append(Cancel(TASK_DUE, subject, f"the task is {status}"))
    return changes
