"""Tasks for the patient (SDOHCC TaskForPatient) in plain words, and the writes that finish
them (pure: dicts in, dicts out).

A patient Task is a Task whose `owner` is the patient. Its kind comes from `Task.code`:
answer a questionnaire (SDC `complete-questionnaire`, with the Questionnaire's canonical in
`input[questionnaire]`), make contact (SDOHCC `make-contact`, whom to contact in
`input[contact-entity]`), review material (SDOHCC `review-material`, the DocumentReference
in `focus`), or general information (anything else: its description). The dates a patient
sees come from `restriction.period`: `start` is the day the Task is due (before it, the Task
is "coming up"), `end` the last day it can be done.

Finishing a Task is one update of it: `completed` with the output the IG names
(`questionnaire-response`, `chosen-contact`), or `rejected` with the patient's reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from fhir_server.web.words import parse_time
from fhir_server.workflow.canonical import SDOHCC_CODES

SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
OPEN = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
DONE = ("completed", "rejected", "cancelled", "failed", "entered-in-error")
KINDS = {(SDC_TEMP, "complete-questionnaire"): "questionnaire",
         (SDOHCC_CODES, "make-contact"): "contact",
         (SDOHCC_CODES, "review-material"): "material",
         (SDOHCC_CODES, "general-information"): "information"}
MAX_REASON = 500


def has_code(concept: dict | None, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code
               for c in (concept or {}).get("coding") or [])


def task_kind(task: dict) -> str:
    """questionnaire | contact | material | information."""
    for (system, code), kind in KINDS.items():
        if has_code(task.get("code"), system, code):
            return kind
    return "information"


def inputs(task: dict, system: str, code: str) -> list[dict]:
    return [i for i in task.get("input") or [] if has_code(i.get("type"), system, code)]


def questionnaire_canonical(task: dict) -> str:
    """The canonical (`url|version`) of the Questionnaire to answer, or ''."""
    for item in inputs(task, SDC_TEMP, "questionnaire"):
        value = item.get("valueCanonical") or item.get("valueUri") or item.get("valueUrl")
        if isinstance(value, str) and value:
            return value
        ref = (item.get("valueReference") or {}).get("reference")
        if isinstance(ref, str) and ref.startswith("Questionnaire/"):
            return ref
    return ""


def contact_references(task: dict) -> list[str]:
    """Whom the patient is asked to contact (`input[contact-entity]` references)."""
    out = []
    for item in inputs(task, SDOHCC_CODES, "contact-entity"):
        ref = (item.get("valueReference") or {}).get("reference")
        if isinstance(ref, str) and ref:
            out.append(ref)
    return out


def material_references(task: dict) -> list[str]:
    """The material to review (`focus`, a DocumentReference)."""
    ref = (task.get("focus") or {}).get("reference")
    return [ref] if isinstance(ref, str) and ref.startswith("DocumentReference/") else []


def is_patient_task(task: dict, patient_ref: str) -> bool:
    return (task.get("owner") or {}).get("reference") == patient_ref


@dataclass
class Due:
    """When a patient Task can and should be done."""

    start: datetime | None = None  # due from this day
    end: datetime | None = None  # last day

    def coming_up(self, now: datetime) -> bool:
        return self.start is not None and self.start > now

    def late(self, now: datetime) -> bool:
        return self.end is not None and self.end < now


def due_of(task: dict) -> Due:
    period = (task.get("restriction") or {}).get("period") or {}
    return Due(parse_time(period.get("start")), parse_time(period.get("end")))


@dataclass
class PatientTask:
    """A patient Task as the patient pages show it."""

    task: dict
    kind: str
    due: Due
    questionnaire: str = ""
    contacts: list[str] = field(default_factory=list)
    materials: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.task.get("id"))

    @property
    def status(self) -> str:
        return str(self.task.get("status") or "")

    @property
    def open(self) -> bool:
        return self.status in OPEN

    @property
    def version(self) -> str:
        return str((self.task.get("meta") or {}).get("versionId") or "")


def patient_task(task: dict) -> PatientTask:
    return PatientTask(task=task, kind=task_kind(task), due=due_of(task),
                       questionnaire=questionnaire_canonical(task),
                       contacts=contact_references(task),
                       materials=material_references(task))


def now_instant(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def output(system: str, code: str, reference: str) -> dict:
    return {"type": {"coding": [{"system": system, "code": code}]},
            "valueReference": {"reference": reference}}


def completed(task: dict, outputs: list[dict], now: datetime | None = None) -> dict:
    """The Task finished by the patient, with its outputs."""
    done = {k: v for k, v in task.items() if k != "meta"}
    done["status"] = "completed"
    done.pop("statusReason", None)
    all_outputs = [*(task.get("output") or []), *outputs]
    if all_outputs:  # FHIR has no empty arrays
        done["output"] = all_outputs
    done["lastModified"] = now_instant(now)
    return done


def declined(task: dict, reason: str, now: datetime | None = None) -> dict:
    """The Task the patient says they will not do, with their reason."""
    done = {k: v for k, v in task.items() if k != "meta"}
    done["status"] = "rejected"
    done["statusReason"] = {"text": reason.strip()[:MAX_REASON]}
    done["lastModified"] = now_instant(now)
    return done


def update_entry(task: dict, version: str) -> dict:
    """The transaction entry that stores `task` if nobody changed it since `version`."""
    request = {"method": "PUT", "url": f"Task/{task['id']}"}
    if version:
        request["ifMatch"] = f'W/"{version}"'
    return {"resource": task, "request": request}
