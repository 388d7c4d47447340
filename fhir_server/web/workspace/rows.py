"""Referral Tasks as the receiving organization reads them: "Counseling for Marisol Delgado,
from Riverside Family Health Center, received 2 hours ago", with the acceptance clock.

The clock is the server's stalled-referral policy (`FHIR_SERVER_STALLED_POLICY`, the same
deadlines the stalled sweep applies): a requested referral must be accepted within its
priority's deadline, counted from when it was sent (`authoredOn`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

from fhir_server.web import words
from fhir_server.web.names import Names
from fhir_server.workflow.canonical import EXT_CANDIDATE
from fhir_server.workflow.stalled import StalledPolicy, parse_stalled_policy

URGENT = ("stat", "asap", "urgent")
ACTIVE = ("accepted", "in-progress", "on-hold")
CLOSED = ("completed", "rejected", "failed", "cancelled")
STATE_ORDER = ("requested", *ACTIVE, *CLOSED)
PRIORITY_RANK = {"stat": 0, "asap": 1, "urgent": 2, "routine": 3}
HIDDEN_PATIENT = "shared once you accept"


@cache
def policy_from(text: str) -> StalledPolicy:
    """The stalled policy a setting describes (cached; the server checked it at start)."""
    return parse_stalled_policy(text)


@dataclass(frozen=True)
class Clock:
    """When a requested referral must be accepted."""

    due: datetime
    overdue: bool

    @property
    def words(self) -> str:
        stamp = self.due.isoformat()
        return f"overdue: was due {words.when(stamp)}" if self.overdue \
            else f"accept {words.when(stamp)}"


def acceptance_clock(task: dict, policy: StalledPolicy, now: datetime | None = None
                     ) -> Clock | None:
    """The acceptance deadline of a requested Task (None for other statuses)."""
    if task.get("status") != "requested":
        return None
    sent = words.parse_time(task.get("authoredOn") or (task.get("meta") or {}).get(
        "lastUpdated"))
    if sent is None:
        return None
    deadline = policy.acceptance.get(task.get("priority") or "routine") or \
        policy.acceptance["routine"]
    due = deadline.due(sent, policy)
    return Clock(due=due, overdue=due < (now or datetime.now(UTC)))


@dataclass
class WorkRow:
    """One referral in the queue."""

    task: dict
    id: str
    service: str
    patient: str
    requester: str
    status: str
    status_words: str
    priority: str
    received: str
    updated: str
    clock: Clock | None
    stalled: str | None
    offered: bool  # an open referral offered to us (patient hidden until we accept)

    @property
    def title(self) -> str:
        who = f" for {self.patient}" if not self.offered else ""
        return f"{self.service}{who}, from {self.requester}"

    @property
    def badge(self) -> str:
        return {"completed": "ok", "accepted": "ok", "in-progress": "ok",
                "rejected": "danger", "failed": "danger"}.get(self.status, "neutral")

    @property
    def urgent(self) -> bool:
        return self.priority in URGENT


def service_words(task: dict, request: dict | None = None) -> str:
    """What is asked for: the ServiceRequest's code, else the Task's description."""
    text = words.concept_text((request or {}).get("code")) if request else ""
    return text or task.get("description") or "Referral"


def is_offer(task: dict) -> bool:
    """An open referral: requested, no owner, candidates listed."""
    return task.get("status") == "requested" and not task.get("owner") and any(
        e.get("url") == EXT_CANDIDATE for e in task.get("extension") or [])


def requester_words(names: Names, ref: dict | None) -> str:
    """"Riverside Family Health Center (Dr Amara Okafor)" for a clinician's role; the name
    of an organization as it is."""
    role = names.get(ref) or {}
    if role.get("resourceType") != "PractitionerRole":
        return names.name(ref, "an unnamed clinic")
    clinic = names.name(role.get("organization"), "")
    person = names.name(role.get("practitioner"), "")
    if clinic and person:
        return f"{clinic} ({person})"
    return clinic or person or "an unnamed clinic"


def work_rows(names: Names, tasks: list[dict], policy: StalledPolicy,
              now: datetime | None = None) -> list[WorkRow]:
    """Rows for referral Tasks, every name resolved in one batch request."""
    for task in tasks:
        names.want(task.get("requester"))
        if not is_offer(task):
            names.want(task.get("for"))
    names.fetch()
    for task in tasks:  # a clinician's role: their name and their clinic's
        role = names.get(task.get("requester")) or {}
        if role.get("resourceType") == "PractitionerRole":
            names.want(role.get("organization"))
            names.want(role.get("practitioner"))
    names.fetch()
    rows = []
    for task in tasks:
        offered = is_offer(task)
        status = task.get("status") or ""
        rows.append(WorkRow(
            task=task, id=str(task.get("id")), service=service_words(task),
            patient=HIDDEN_PATIENT if offered else names.name(task.get("for"), "(no patient)"),
            requester=requester_words(names, task.get("requester")),
            status=status, status_words=STATUS_WORDS.get(status, status),
            priority=task.get("priority") or "routine",
            received=task.get("authoredOn") or (task.get("meta") or {}).get("lastUpdated", ""),
            updated=(task.get("meta") or {}).get("lastUpdated", ""),
            clock=acceptance_clock(task, policy, now), stalled=words.stalled_mark(task),
            offered=offered))
    return rows


#: Statuses as the receiving organization says them.
STATUS_WORDS = {"requested": "New", "accepted": "Accepted", "in-progress": "In care",
                "on-hold": "On hold", "completed": "Completed", "rejected": "Declined",
                "failed": "Could not complete", "cancelled": "Cancelled by the clinic",
                "entered-in-error": "Entered in error", "draft": "Draft"}


def urgency_order(rows: list[WorkRow]) -> list[WorkRow]:
    """Crisis and urgent first, by their deadline; then routine, newest first."""
    def key(row: WorkRow) -> tuple:
        due = row.clock.due.timestamp() if row.clock else float("inf")
        urgent = row.urgent
        received = words.parse_time(row.received)
        newest = -(received.timestamp() if received else 0.0)
        return (0 if urgent else 1, due if urgent else 0.0,
                PRIORITY_RANK.get(row.priority, 3), newest)
    return sorted(rows, key=key)


def care_order(rows: list[WorkRow]) -> list[WorkRow]:
    """Referrals in care: urgent first, then by state (accepted, in care, on hold), then
    most recently changed."""
    def key(row: WorkRow) -> tuple:
        changed = words.parse_time(row.updated)
        return (0 if row.urgent else 1, STATE_ORDER.index(row.status)
                if row.status in STATE_ORDER else 99,
                -(changed.timestamp() if changed else 0.0))
    return sorted(rows, key=key)
