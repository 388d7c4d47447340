"""The facts of one referral Task that the outcome measures count, derived from its history
one stored version at a time: the time each status *began* (the `meta.lastUpdated` of the
first version in that status, stamped by the server), never the time of the last update.

`advance(facts, version, at)` applies one version; the write path calls it with the facts
stored for the previous version, and a rebuild folds a Task's whole history through it, so
both give the same facts. Times are epoch microseconds (UTC), like the storage layer's.

Outcome classes (`outcome`) partition the Tasks counted:
  draft, entered-in-error   never sent / a correction (outside the funnel)
  redirected                rejected by `$redirect`: the referral went on to another Task
  waiting                   requested, not yet accepted
  accepted                  accepted, care not started
  in-care                   in progress or on hold
  completed, rejected, cancelled, failed
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from fhir_server.workflow.canonical import EXT_REDIRECTED_TO, EXT_REPLACES
from fhir_server.workflow.refs import reference_of
from fhir_server.workflow.stalled import current_mark
from fhir_server.workflow.task_rules import TERMINAL

OUTCOMES: tuple[str, ...] = (
    "waiting", "accepted", "in-care", "completed", "rejected", "redirected", "cancelled",
    "failed", "draft", "entered-in-error",
)
"""Every outcome class, in the order pages and CSV columns list them."""

NOT_SENT = frozenset({"draft", "entered-in-error", "redirected"})
"""Outcome classes outside the funnel: the referral was never sent, was a correction, or
continues as the Task that `$redirect` created (so a redirected referral counts once)."""


@dataclass(frozen=True)
class TaskFacts:
    """What the measures need from one referral Task (times in epoch microseconds)."""

    status: str
    redirected: bool
    stalled: str | None
    status_reason: str | None
    requester: str | None  # Task.requester reference
    owner: str | None  # Task.owner reference (None: open, not yet claimed)
    focus: str | None  # the ServiceRequest
    patient_id: str | None
    priority: str
    replaces: str | None  # the Task this one replaced through $redirect
    first_at: int  # the first stored version
    authored_at: int | None
    requested_at: int | None = None  # the first time it was `requested`
    accepted_at: int | None = None
    started_at: int | None = None  # first in-progress (or completed, when it skipped it)
    completed_at: int | None = None
    ended_at: int | None = None  # first terminal status
    status_since: int = 0  # when the current status began

    @property
    def referred_at(self) -> int:
        """When the referral counts as made: first requested, else authored, else stored."""
        return self.requested_at or self.authored_at or self.first_at

    @property
    def outcome(self) -> str:
        return outcome_of(self.status, self.redirected)


def outcome_of(status: str, redirected: bool) -> str:
    """The outcome class of a Task in `status` (see the module docstring)."""
    if status == "rejected" and redirected:
        return "redirected"
    if status == "requested":
        return "waiting"
    if status in ("in-progress", "on-hold"):
        return "in-care"
    return status if status in OUTCOMES else "entered-in-error"


def instant_us(value: object) -> int | None:
    """A FHIR dateTime as epoch microseconds (UTC when it has no offset; None if unusable)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value.strip()
    text = text + "-01-01" if len(text) == 4 else text + "-01" if len(text) == 7 else text
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def _extension_ref(task: dict, url: str) -> str | None:
    for ext in task.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return reference_of(ext.get("valueReference"))
    return None


def _patient_id(task: dict) -> str | None:
    ref = reference_of(task.get("for"))
    return ref.split("/", 1)[1] if ref and ref.startswith("Patient/") else None


def advance(facts: TaskFacts | None, version: dict, at: int) -> TaskFacts:
    """The facts after one more stored version of the Task (`at`: its lastUpdated)."""
    status = str(version.get("status") or "unknown")
    current = {
        "status": status,
        "redirected": _extension_ref(version, EXT_REDIRECTED_TO) is not None,
        "stalled": current_mark(version),
        "status_reason": (version.get("statusReason") or {}).get("text"),
        "requester": reference_of(version.get("requester")),
        "owner": reference_of(version.get("owner")),
        "focus": reference_of(version.get("focus")),
        "patient_id": _patient_id(version),
        "priority": str(version.get("priority") or "routine"),
        "replaces": _extension_ref(version, EXT_REPLACES),
        "authored_at": instant_us(version.get("authoredOn")),
    }
    if facts is None:
        facts = TaskFacts(first_at=at, status_since=at, **current)
        previous_status = None
    else:
        previous_status = facts.status
        facts = replace(facts, **current)
    if status != previous_status:
        facts = replace(facts, status_since=at)
        facts = _first_times(facts, status, at)
    return facts


def _first_times(facts: TaskFacts, status: str, at: int) -> TaskFacts:
    changes: dict[str, int] = {}
    if status == "requested" and facts.requested_at is None:
        changes["requested_at"] = at
    if status == "accepted" and facts.accepted_at is None:
        changes["accepted_at"] = at
    if status in ("in-progress", "completed") and facts.started_at is None:
        changes["started_at"] = at
    if status == "completed" and facts.completed_at is None:
        changes["completed_at"] = at
    if status in TERMINAL and facts.ended_at is None:
        changes["ended_at"] = at
    return replace(facts, **changes) if changes else facts


def from_history(versions: list[tuple[int, dict | None]]) -> TaskFacts | None:
    """The facts of a Task from its versions as (lastUpdated, body or None for a deletion),
    oldest first; None when it is deleted now or has no version."""
    facts: TaskFacts | None = None
    for at, body in versions:
        if body is None:
            facts = None
            continue
        facts = advance(facts, body, at)
    return facts
