"""The referral as one FHIR transaction (pure: dicts in, a Bundle's entries out).

Entries, in order: the Patient (conditional create on its identifier, so an existing patient
is reused), the Consent when the clinician recorded it, the SDOHCC ServiceRequest (screening
responses and the Consent as supporting information) and the SDOHCC referral Task, owned by
the chosen organization. The ServiceRequest and the Task carry the form's idempotency key as
an identifier and are created only if nothing has that identifier yet (`ifNoneExist`), so
sending the same form twice creates one referral.

An open referral (`Routing.candidates`: several organizations, the first to accept owns it)
is a Task without owner, with `performerType` (the kind of provider wanted) and one
`task-candidate` extension per organization (fhir_server/workflow/RULES.md §10). Its
ServiceRequest names no performer (the Task's candidates are the performers on offer); while
it is open each candidate may read it as an owner would (access rule 5b), and once one has
accepted, the others no longer see it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fhir_server.web.forms import key_condition, key_identifier
from fhir_server.workflow.canonical import CANONICAL_BASE, EXT_CANDIDATE
from mappers.directory_model import (
    REFERRAL_CODE_CATEGORY,
    SERVICE_CATEGORIES,
    SERVICE_CATEGORY_CS,
)

SNOMED = "http://snomed.info/sct"
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition"
PRIORITY_OVERRIDE_EXT = f"{CANONICAL_BASE}/StructureDefinition/safety-priority-override-reason"
OPEN_REFERRAL_EXTENSION = EXT_CANDIDATE
DEFAULT_SERVICE = ("390866009", "Referral to mental health team")
CATEGORY = {"system": SNOMED, "code": "410606002", "display": "Social service procedure"}
PRIORITIES = ("routine", "urgent", "asap", "stat")
MAX_REASON = 2000
CONSENT_TEXT = ("The patient agrees that the receiving provider may see the screening results "
                "and the reason for this referral.")


@dataclass(frozen=True)
class Routing:
    """Who receives the referral: one owner, or several candidates (an open referral)."""

    owner: str | None = None  # Organization/x
    service: str | None = None  # HealthcareService/x chosen (the ServiceRequest performer)
    candidates: tuple[str, ...] = ()  # Organization/x ... (an open referral: no owner)


@dataclass
class Referral:
    """What the send form collected."""

    key: str
    patient: dict  # the Patient resource (with id when it is on the server)
    requester: str  # PractitionerRole/x or Organization/x
    organization: str  # the requester's Organization/x (Consent.organization)
    routing: Routing
    service_code: tuple[str, str]
    priority: str
    reason: str
    supporting: list[str] = field(default_factory=list)  # QuestionnaireResponse/x ...
    consent: bool = False
    override_reason: str = ""


def now_instant() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def patient_condition(patient: dict) -> str | None:
    """`identifier=system|value` for the patient's medical record number (else its first
    identifier with a system)."""
    idents = [i for i in patient.get("identifier") or [] if i.get("system") and i.get("value")]
    mrn = next((i for i in idents if any(c.get("code") == "MR" for c in (
        i.get("type") or {}).get("coding") or [])), idents[0] if idents else None)
    return f"identifier={mrn['system']}|{mrn['value']}" if mrn else None


def _patient_entry(patient: dict) -> tuple[dict | None, str]:
    """The conditional Patient entry (None when the patient has no identifier and is
    referenced by id) and the reference other entries use."""
    condition = patient_condition(patient)
    if condition is None:
        return None, f"Patient/{patient['id']}"
    body = {k: v for k, v in patient.items() if k not in ("id", "meta", "text")}
    urn = _urn()
    return {"fullUrl": urn, "resource": body,
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": condition}}, urn


def referral_entries(referral: Referral, authored: str | None = None) -> list[dict]:
    """The transaction entries that send `referral`."""
    routing = referral.routing
    if routing.candidates and routing.owner:
        raise ValueError("An open referral has no single provider: choose one provider, or "
                         "offer it to several.")
    if not routing.candidates and not routing.owner:
        raise ValueError("Choose the provider who should receive the referral.")
    authored = authored or now_instant()
    out: list[dict] = []
    patient_entry, patient_ref = _patient_entry(referral.patient)
    if patient_entry:
        out.append(patient_entry)
    supporting = [{"reference": ref} for ref in referral.supporting]
    if referral.consent:
        consent_urn = _urn()
        out.append({"fullUrl": consent_urn, "resource": consent(
            patient_ref, referral.organization, authored[:10]),
            "request": {"method": "POST", "url": "Consent"}})
        supporting.append({"reference": consent_urn})
    sr_urn, ident = _urn(), key_identifier(referral.key)
    code, display = referral.service_code
    sr: dict = {
        "resourceType": "ServiceRequest",
        "meta": {"profile": [f"{SDOHCC}/SDOHCC-ServiceRequest"]},
        "identifier": [ident],
        "status": "active", "intent": "order", "priority": referral.priority,
        "category": [{"coding": [CATEGORY]}],
        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}],
                 "text": display},
        "subject": {"reference": patient_ref},
        "authoredOn": authored,
        "requester": {"reference": referral.requester},
        "note": [{"text": referral.reason, "time": authored}],
    }
    if routing.candidates:
        pass  # no performer: the candidates are on the Task
    elif routing.service:
        sr["performer"] = [{"reference": routing.service}]
    elif routing.owner:
        sr["performer"] = [{"reference": routing.owner}]
    if supporting:
        sr["supportingInfo"] = supporting
    task: dict = {
        "resourceType": "Task",
        "meta": {"profile": [f"{SDOHCC}/SDOHCC-TaskForReferralManagement"]},
        "identifier": [ident],
        "status": "requested", "intent": "order", "priority": referral.priority,
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill", "display": "Fulfill the focal request"}]},
        "description": display,
        "focus": {"reference": sr_urn},
        "for": {"reference": patient_ref},
        "authoredOn": authored,
        "requester": {"reference": referral.requester},
    }
    if routing.owner:
        task["owner"] = {"reference": routing.owner}
    if routing.candidates:
        task["performerType"] = [performer_type(code, display)]
        task["extension"] = [{"url": OPEN_REFERRAL_EXTENSION, "valueReference": {
            "reference": ref}} for ref in dict.fromkeys(routing.candidates)]
    if referral.override_reason.strip():
        override = [{"url": PRIORITY_OVERRIDE_EXT,
                     "valueString": referral.override_reason.strip()}]
        sr["extension"] = override
        task["extension"] = [*task.get("extension", []), *override]
    out.append({"fullUrl": sr_urn, "resource": sr, "request": {
        "method": "POST", "url": "ServiceRequest", "ifNoneExist": key_condition(referral.key)}})
    out.append({"fullUrl": _urn(), "resource": task, "request": {
        "method": "POST", "url": "Task", "ifNoneExist": key_condition(referral.key)}})
    return out


def performer_type(code: str, display: str) -> dict:
    """Task.performerType of an open referral: the kind of provider the service needs (the
    directory's service category when the referral code maps to one)."""
    category = REFERRAL_CODE_CATEGORY.get(code)
    if category is None:
        return {"text": f"Provider of: {display}"}
    words = SERVICE_CATEGORIES[category]
    return {"coding": [{"system": SERVICE_CATEGORY_CS, "code": category, "display": words}],
            "text": f"Provider of {words.lower()}"}


def consent(patient_ref: str, organization: str, day: str) -> dict:
    """The SDOHCC Consent the clinician records: share the referral's clinical details."""
    return {
        "resourceType": "Consent",
        "meta": {"profile": [f"{SDOHCC}/SDOHCC-Consent"]},
        "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                  "code": "IDSCL"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": day,
        "organization": [{"reference": organization}],
        "sourceAttachment": {"contentType": "text/plain", "title": CONSENT_TEXT},
        "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
            "code": "hipaa-auth"}]},
    }


def created(response: dict, res_type: str) -> dict | None:
    """The resource of `res_type` in a transaction-response Bundle."""
    for entry in response.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == res_type:
            return resource
    return None
