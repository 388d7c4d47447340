"""Resources in words: names instead of ids, ages, dates and times people read, statuses.

Pure functions of FHIR JSON (no I/O). `Names` resolves references to display names in one
batch call per page (see `fhir_server.web.names`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from mappers.languages import language_name

NO_NAME = "(no name recorded)"

TASK_STATUS = {
    "draft": "draft", "requested": "waiting for the provider to accept",
    "received": "received", "accepted": "accepted", "rejected": "declined",
    "ready": "ready", "cancelled": "cancelled", "in-progress": "in progress",
    "on-hold": "on hold", "failed": "could not be completed", "completed": "completed",
    "entered-in-error": "entered in error",
}
TASK_STATUS_SHORT = {
    "requested": "Sent", "accepted": "Accepted", "rejected": "Declined",
    "cancelled": "Cancelled", "in-progress": "In progress", "on-hold": "On hold",
    "failed": "Failed", "completed": "Completed", "draft": "Draft",
    "entered-in-error": "Entered in error",
}
PRIORITY = {"routine": "Routine", "urgent": "Urgent", "asap": "As soon as possible",
            "stat": "Crisis (immediately)"}
STALLED = {"stalled-not-accepted": "not accepted in time",
           "stalled-not-started": "accepted but not started in time",
           "stalled-no-progress": "no progress for too long"}


def human_name(resource: dict | None) -> str:
    """`Given Family` of the official (else first) name; `text` when that is all."""
    names = [n for n in (resource or {}).get("name") or [] if isinstance(n, dict)]
    if not names:
        return NO_NAME
    name = next((n for n in names if n.get("use") == "official"), names[0])
    parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
    text = " ".join(p for p in parts if p).strip()
    return text or name.get("text") or NO_NAME


def display_name(resource: dict | None) -> str:
    """The name a person reads for any resource kind."""
    if not resource:
        return "(unknown)"
    kind = resource.get("resourceType")
    if kind in ("Patient", "Practitioner", "RelatedPerson", "Person"):
        return human_name(resource)
    if isinstance(resource.get("name"), str) and resource["name"].strip():
        return resource["name"].strip()
    if kind == "PractitionerRole":
        who = (resource.get("practitioner") or {}).get("display")
        org = (resource.get("organization") or {}).get("display")
        return ", ".join(x for x in (who, org) if x) or "a staff member"
    return concept_text(resource.get("code")) or f"(unnamed {kind or 'resource'})"


def concept_text(concept: dict | None) -> str:
    """A CodeableConcept in words: its text, else the first coding's display, else code."""
    if not isinstance(concept, dict):
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding") or []:
        if coding.get("display"):
            return str(coding["display"])
    for coding in concept.get("coding") or []:
        if coding.get("code"):
            return str(coding["code"])
    return ""


def parse_time(value: str | None) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware datetime (dates at 00:00 UTC)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        if len(text) == 4:
            return datetime(int(text), 1, 1, tzinfo=UTC)
        if len(text) == 7:
            return datetime(int(text[:4]), int(text[5:7]), 1, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age_on(birth_date: str | None, today: date | None = None) -> int | None:
    """Age in whole years on `today`."""
    born = parse_time(birth_date)
    if born is None:
        return None
    today = today or date.today()
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return years if years >= 0 else None


def when(value: str | None, now: datetime | None = None) -> str:
    """`2 days ago`, `in 3 hours`, `just now` (or '' when unknown)."""
    moment = parse_time(value)
    if moment is None:
        return ""
    now = now or datetime.now(UTC)
    seconds = (now - moment).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        return "just now"
    for size, unit in ((86400 * 365, "year"), (86400 * 30, "month"), (86400 * 7, "week"),
                       (86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds >= size:
            count = int(seconds // size)
            words = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {words}" if future else f"{words} ago"
    return "just now"


def day(value: str | None) -> str:
    """`3 Dec 2026`."""
    moment = parse_time(value)
    return f"{moment.day} {moment:%b %Y}" if moment else ""


def day_time(value: str | None) -> str:
    """`3 Dec 2026, 14:05 UTC` (dates without a time: just the day)."""
    moment = parse_time(value)
    if moment is None:
        return ""
    if isinstance(value, str) and len(value) <= 10:
        return day(value)
    moment = moment.astimezone(UTC)
    return f"{moment.day} {moment:%b %Y}, {moment:%H:%M} UTC"


def patient_language(patient: dict | None) -> str:
    """The preferred (else first) communication language of a Patient, in words."""
    comms = [c for c in (patient or {}).get("communication") or [] if isinstance(c, dict)]
    if not comms:
        return ""
    chosen = next((c for c in comms if c.get("preferred")), comms[0])
    concept = chosen.get("language") or {}
    for coding in concept.get("coding") or []:
        if coding.get("code"):
            return language_name(coding["code"])
    return concept_text(concept)


def identifier_rows(resource: dict | None) -> list[tuple[str, str]]:
    """(kind, value) of each identifier: the type in words, else the system."""
    rows = []
    for ident in (resource or {}).get("identifier") or []:
        if not ident.get("value"):
            continue
        kind = concept_text(ident.get("type"))
        kind = {"MR": "Medical record number", "SS": "Social Security number"}.get(kind, kind)
        rows.append((kind or ident.get("system") or "Identifier", str(ident["value"])))
    return rows


def task_status(status: str | None) -> str:
    return TASK_STATUS.get(status or "", status or "unknown")


def priority_words(priority: str | None) -> str:
    return PRIORITY.get(priority or "routine", priority or "Routine")


def stalled_words(code: str | None) -> str:
    """A stalled mark in words ("not accepted in time")."""
    return STALLED.get(code or "", code or "")


def stalled_mark(task: dict) -> str | None:
    """The stalled code of a Task's businessStatus (our CodeSystem), if any."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("code") in STALLED:
            return coding["code"]
    return None
