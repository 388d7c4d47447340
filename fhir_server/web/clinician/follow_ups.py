"""The follow-up screenings a referral asked of the patient (SDOHCC TaskForPatient, part of
the referral Task; the server creates them when care starts: workflow/OUTCOMES.md), in
words for the tracker: "PHQ-9 follow-up: due 13 Apr 2026, waiting for the patient"."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from fhir_server.web import words
from fhir_server.web.api import FhirApi, entries

COMPLETE_QUESTIONNAIRE = "complete-questionnaire"
INSTRUMENTS = {"phq-9": "PHQ-9", "gad-7": "GAD-7"}
STATUS_WORDS = {"ready": "waiting for the patient", "in-progress": "started by the patient",
                "completed": "answered", "cancelled": "cancelled", "failed": "not answered",
                "on-hold": "on hold", "entered-in-error": "entered in error"}


@dataclass(frozen=True)
class FollowUp:
    instrument: str  # "PHQ-9"
    status: str
    status_words: str
    due: str  # FHIR dateTime: when the patient should answer
    counts_until: str  # the last day an answer counts for the outcome measures
    answered: str  # when it was completed ('' until then)

    @property
    def overdue(self) -> bool:
        due = words.parse_time(self.due)
        return self.status == "ready" and due is not None and due < datetime.now(UTC)

    @property
    def text(self) -> str:
        if self.status == "completed":
            when = words.day(self.answered)
            return f"{self.instrument} follow-up answered" + (f" on {when}" if when else "")
        state = "overdue, " + self.status_words if self.overdue else self.status_words
        return f"{self.instrument} follow-up due {words.day(self.due)}: {state}"


def _instrument(task: dict) -> str:
    for item in task.get("input") or []:
        canonical = str(item.get("valueCanonical") or "")
        key = canonical.split("|")[0].rsplit("/", 1)[-1]
        if key in INSTRUMENTS:
            return INSTRUMENTS[key]
    return "Screening"


def follow_up_of(task: dict) -> FollowUp:
    period = (task.get("restriction") or {}).get("period") or {}
    status = str(task.get("status") or "")
    answered = task.get("lastModified") or (task.get("meta") or {}).get("lastUpdated", "")
    return FollowUp(_instrument(task), status, STATUS_WORDS.get(status, status),
                    period.get("start", ""), period.get("end", ""),
                    answered if status == "completed" else "")


def is_screening_request(task: dict) -> bool:
    return any(c.get("code") == COMPLETE_QUESTIONNAIRE
               for c in (task.get("code") or {}).get("coding") or [])


def follow_ups(api: FhirApi, task_ids: list[str]) -> dict[str, list[FollowUp]]:
    """The follow-up screenings of each referral Task (one search for all of them)."""
    if not task_ids:
        return {}
    bundle = api.search("Task", [("part-of", ",".join(f"Task/{i}" for i in task_ids)),
                                 ("code", COMPLETE_QUESTIONNAIRE), ("_count", "200")])
    return follow_ups_in(entries(bundle), task_ids)


def follow_ups_in(resources: list[dict], task_ids: list[str]) -> dict[str, list[FollowUp]]:
    """The follow-up screenings among `resources` (e.g. a search's `_revinclude` of
    `Task:part-of`), by the referral Task they are part of."""
    out: dict[str, list[FollowUp]] = {}
    for task in resources:
        if task.get("resourceType") != "Task" or not is_screening_request(task):
            continue
        for part in task.get("partOf") or []:
            ref = str(part.get("reference") or "")
            if ref.startswith("Task/") and ref[5:] in task_ids:
                out.setdefault(ref[5:], []).append(follow_up_of(task))
    for found in out.values():
        found.sort(key=lambda f: (f.instrument, f.due))
    return out
