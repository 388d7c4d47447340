"""Who can see what: the patient's Consents, the referrals that carry each one, and what the
receiving provider sees with and without it (the access policy's consent rule, in words).

A referral's ServiceRequest names its Consent in `supportingInfo`, next to the clinical
details it shares (screening answers and scores). While the Consent is `active` the
provider that has the referral may read those details; when the patient withdraws it
(status `inactive`) the provider keeps only the referral itself and how to reach the
patient, at once, because the server checks the Consent on every read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlencode

from fhir_server.web.api import ApiError, FhirApi, entries
from fhir_server.web.names import Names
from fhir_server.workflow.canonical import EXT_REDIRECTED_TO, TASK_CODE_SYSTEM

CLINICAL_TYPES = ("QuestionnaireResponse", "Observation", "Condition", "Goal",
                  "DocumentReference", "Encounter")
KNOWN_QUESTIONNAIRES = {"phq-9": "PHQ-9", "gad-7": "GAD-7", "phq-2": "PHQ-2",
                        "gad-2": "GAD-2"}


@dataclass
class Recipient:
    """A provider that has (or had) a referral carrying the Consent."""

    name: str
    referred: str  # when the referral was made (ISO)
    status: str  # the referral Task's status


@dataclass
class Share:
    """One Consent, as the patient decides about it."""

    consent_id: str
    consent: dict
    version: str
    active: bool
    given: str  # the day it was recorded
    recorded_by: str  # the clinic that recorded it
    recipients: list[Recipient] = field(default_factory=list)
    answers: list[tuple[str, str]] = field(default_factory=list)  # (questionnaire, day)
    other_details: int = 0  # other clinical resources shared (conditions, goals, ...)


def _questionnaire_name(canonical: str) -> str:
    tail = canonical.split("|")[0].rstrip("/").rsplit("/", 1)[-1].lower()
    return KNOWN_QUESTIONNAIRES.get(tail, "")


def load_sharing(api: FhirApi, patient_ref: str) -> list[Share]:
    """The patient's Consents with the referrals that carry them (three round trips)."""
    found = api.batch([
        "Consent?" + urlencode([("patient", patient_ref), ("_count", "100")]),
        "Task?" + urlencode([("patient", patient_ref),
                             ("code", f"{TASK_CODE_SYSTEM}|fulfill"),
                             ("_include", "Task:focus"), ("_count", "100")])])
    for answer in found:
        if isinstance(answer, ApiError):
            raise answer
    consents = [c for c in entries(found[0]) if c.get("resourceType") == "Consent"]
    tasks = [t for t in entries(found[1]) if t.get("resourceType") == "Task" and not (
        t.get("status") == "rejected" and any(e.get("url") == EXT_REDIRECTED_TO
                                              for e in t.get("extension") or []))]
    requests = {f"ServiceRequest/{r['id']}": r for r in entries(found[1], "include")
                if r.get("resourceType") == "ServiceRequest"}
    names = Names(api)
    for consent in consents:
        for org in consent.get("organization") or []:
            names.want(org)
    for task in tasks:
        names.want(task.get("owner"))
    clinical: dict[str, list[str]] = {}
    for ref, request in requests.items():
        refs = [r.get("reference", "") for r in (request.get("supportingInfo") or []) + (
            request.get("reasonReference") or [])]
        clinical[ref] = [r for r in refs if r.split("/")[0] in CLINICAL_TYPES]
        for r in clinical[ref]:
            if r.startswith("QuestionnaireResponse/"):
                names.want(r)
    names.fetch()
    shares = []
    for consent in consents:
        ref = f"Consent/{consent['id']}"
        share = Share(
            consent_id=str(consent["id"]), consent=consent,
            version=str((consent.get("meta") or {}).get("versionId") or ""),
            active=consent.get("status") == "active", given=str(consent.get("dateTime") or ""),
            recorded_by=", ".join(names.name(o, "") for o in consent.get("organization") or []
                                  if not names.name(o, "").startswith("(")))
        seen: set[str] = set()
        for task in tasks:
            request_ref = (task.get("focus") or {}).get("reference") or ""
            request = requests.get(request_ref) or {}
            carried = [s.get("reference") for s in request.get("supportingInfo") or []]
            if ref not in carried:
                continue
            owner = names.name(task.get("owner"), "") if task.get("owner") else ""
            share.recipients.append(Recipient(
                name=owner if owner and not owner.startswith("(") else "",
                referred=str(task.get("authoredOn") or ""), status=str(task.get("status"))))
            for detail in clinical.get(request_ref, []):
                if detail in seen:
                    continue
                seen.add(detail)
                response = names.get(detail)
                if response is not None:
                    share.answers.append((
                        _questionnaire_name(str(response.get("questionnaire") or "")),
                        str(response.get("authored") or "")))
                else:
                    share.other_details += 1
        shares.append(share)
    shares.sort(key=lambda s: (not s.active, s.given), reverse=False)
    return shares


def set_sharing(api: FhirApi, consent: dict, active: bool, version: str) -> dict:
    """Turn a Consent on (`active`) or off (`inactive`), if nobody changed it since
    `version`. Returns the stored Consent."""
    changed = {k: v for k, v in consent.items() if k != "meta"}
    changed["status"] = "active" if active else "inactive"
    return api.update(changed, f'W/"{version}"' if version else None)
