"""Referral Tasks in words: "Referral to Lakeside Behavioral Health, requested 2 days ago",
its status, priority, clock and what needs the care team's attention."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.web import words
from fhir_server.web.names import Names

ATTENTION_STATUSES = ("rejected", "failed")
URGENT = ("stat", "asap", "urgent")


@dataclass
class ReferralRow:
    task: dict
    id: str
    title: str
    patient: str
    patient_id: str
    owner: str
    status: str
    status_words: str
    priority: str
    authored: str
    updated: str
    stalled: str | None
    redirected: bool
    attention: str  # why it needs attention ('' when it does not)

    @property
    def badge(self) -> str:
        return {"completed": "ok", "accepted": "ok", "in-progress": "ok",
                "rejected": "danger", "failed": "danger", "cancelled": "neutral"}.get(
            self.status, "neutral")


def is_redirected(task: dict) -> bool:
    return any(e.get("url", "").endswith("/task-redirected-to")
               for e in task.get("extension") or [])


def attention_reason(task: dict) -> str:
    """Why a referral needs the care team (declined, redirected, failed, stalled, an urgent
    referral still waiting), or ''."""
    status = task.get("status")
    if status == "rejected":
        return "redirected to another provider" if is_redirected(task) else "declined"
    if status == "failed":
        return "could not be completed"
    mark = words.stalled_mark(task)
    if mark:
        return "stalled: " + words.STALLED[mark]
    if status == "requested" and task.get("priority") in URGENT:
        return f"{words.priority_words(task.get('priority')).lower()} referral not yet accepted"
    return ""


def referral_rows(names: Names, tasks: list[dict]) -> list[ReferralRow]:
    """Rows for referral Tasks, with every name resolved in one batch."""
    for task in tasks:
        names.want(task.get("owner"))
        names.want(task.get("for"))
    names.fetch()
    rows = []
    for task in tasks:
        owner = names.name(task.get("owner"), "") if task.get("owner") else ""
        authored = task.get("authoredOn") or (task.get("meta") or {}).get("lastUpdated", "")
        target = owner or "an open list of providers"
        title = f"Referral to {target}, requested {words.when(authored) or 'earlier'}"
        patient_ref = (task.get("for") or {}).get("reference") or ""
        rows.append(ReferralRow(
            task=task, id=str(task.get("id")), title=title,
            patient=names.name(task.get("for"), "(no patient)"),
            patient_id=patient_ref.split("/", 1)[1] if patient_ref.startswith("Patient/")
            else "",
            owner=owner or "not yet chosen", status=task.get("status") or "",
            status_words=words.TASK_STATUS_SHORT.get(task.get("status") or "",
                                                     task.get("status") or ""),
            priority=task.get("priority") or "routine", authored=authored,
            updated=(task.get("meta") or {}).get("lastUpdated", ""),
            stalled=words.stalled_mark(task), redirected=is_redirected(task),
            attention=attention_reason(task)))
    return rows
