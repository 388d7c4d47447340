"""The follow-up screening a referral schedules when care starts (measurement-based care).

When a referral Task first reaches `in-progress`, the server asks the patient to answer the
PHQ-9 and/or GAD-7 again: one SDOHCC TaskForPatient per questionnaire (the IG's patient-task
pattern), for the patient, requested by whoever requested the referral (so the referring
care team sees it in their tracker), part of the referral Task. Which questionnaires: those
the patient has a baseline score for before the referral; both when there is none.

Shape (what the patient pages and reminders read):
  status            `ready` (the IG's patient-task start state), priority `routine`
  code              SDC temp `complete-questionnaire`
  for, owner        the Patient
  requester         the referral Task's requester
  partOf            the referral Task; `basedOn`: its ServiceRequest
  input             `questionnaire` (canonical of our PHQ-9 or GAD-7) and
                    `questionnaire-category` (`risk-questionnaire`)
  restriction.period.start   the due day: care start + the configured weeks
                    (`FHIR_SERVER_FOLLOW_UP_SCREENING_WEEKS`, default 6, 4 to 12; 0 = off)
  restriction.period.end     care start + 12 weeks: the last day an answer counts for the
                    outcome measures
  identifier        `<FOLLOW_UP_SYSTEM>|<referral Task id>/<phq-9 or gad-7>` (one per referral
                    and questionnaire, however often the referral goes back to in-progress)
When the patient answers, the Task's `output` (`questionnaire-response`) names the
QuestionnaireResponse and its status becomes `completed`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fhir_server.workflow.canonical import CANONICAL_BASE, PATIENT_TASK_PROFILE, SDOHCC_CODES
from fhir_server.workflow.measurement import FOLLOW_UP_TO_US, INSTRUMENTS
from fhir_server.workflow.times import format_instant

FOLLOW_UP_SYSTEM = f"{CANONICAL_BASE}/follow-up-screening"
SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
QUESTIONNAIRES = {code: f"{CANONICAL_BASE}/Questionnaire/{code}|1.0.0" for code in INSTRUMENTS}
DEFAULT_WEEKS = 6
MIN_WEEKS, MAX_WEEKS = 4, 12


def check_weeks(weeks: int) -> int:
    """The follow-up delay setting, refused unless 0 (off) or 4 to 12 weeks."""
    if weeks != 0 and not MIN_WEEKS <= weeks <= MAX_WEEKS:
        raise ValueError(f"FHIR_SERVER_FOLLOW_UP_SCREENING_WEEKS={weeks}: use 0 (off) or "
                         f"{MIN_WEEKS} to {MAX_WEEKS} weeks, so that the answer falls in the "
                         "4 to 12 weeks the outcome measures count")
    return weeks


def identifier(task_id: str, instrument: str) -> dict:
    return {"system": FOLLOW_UP_SYSTEM, "value": f"{task_id}/{instrument}"}


def follow_up_task(referral: dict, instrument: str, started: datetime, weeks: int,
                   now: datetime | None = None) -> dict:
    """The TaskForPatient asking the referral's patient to answer `instrument` again."""
    name = INSTRUMENTS[instrument][1]
    due = started + timedelta(weeks=weeks)
    last = started + timedelta(microseconds=FOLLOW_UP_TO_US)
    task: dict = {
        "resourceType": "Task",
        "meta": {"profile": [PATIENT_TASK_PROFILE]},
        "identifier": [identifier(str(referral["id"]), instrument)],
        "status": "ready",
        "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": SDC_TEMP, "code": "complete-questionnaire",
                             "display": "Complete Questionnaire"}],
                 "text": f"Answer the {name} follow-up questions"},
        "description": f"Follow-up {name}: how you have been feeling since your care "
                       "started.",
        "for": dict(referral["for"]),
        "owner": dict(referral["for"]),
        "authoredOn": format_instant(now or datetime.now(UTC)),
        "requester": dict(referral["requester"]),
        "partOf": [{"reference": f"Task/{referral['id']}"}],
        "restriction": {"period": {"start": format_instant(due),
                                   "end": format_instant(last)}},
        "input": [
            {"type": {"coding": [{"system": SDC_TEMP, "code": "questionnaire",
                                  "display": "Questionnaire"}]},
             "valueCanonical": QUESTIONNAIRES[instrument]},
            {"type": {"coding": [{"system": SDOHCC_CODES, "code": "questionnaire-category",
                                  "display": "Questionnaire Category"}]},
             "valueCodeableConcept": {"coding": [{
                 "system": SDOHCC_CODES, "code": "risk-questionnaire",
                 "display": "Risk Questionnaire"}]}},
        ],
    }
    focus = referral.get("focus")
    if isinstance(focus, dict) and str(focus.get("reference", "")).startswith(
            "ServiceRequest/"):
        task["basedOn"] = [{"reference": focus["reference"]}]
    return task


def is_follow_up(task: dict) -> bool:
    """Is this Task a follow-up screening request we scheduled?"""
    return any(i.get("system") == FOLLOW_UP_SYSTEM for i in task.get("identifier") or []
               if isinstance(i, dict))
