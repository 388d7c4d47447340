"""A small built-in checker for the SDOHCC / US Core rules the referral exchange depends on.

It is not a full validator: it checks the cardinalities, fixed values and required bindings
of the profiles the kit's data uses (SDOHCC Task For Referral Management, ServiceRequest,
Procedure, Consent; US Core Patient and Organization), read from the IG's FSH. The profile
tests also call the server's `$validate` when the server offers it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.conformance.resources import PROFILE, TASK_CODE, TEMP_CODES

REFERRAL_TASK_STATUS = {"draft", "requested", "accepted", "rejected", "cancelled",
                        "in-progress", "on-hold", "failed", "completed", "entered-in-error"}
SDOH_CATEGORIES = {
    "sdoh-category-unspecified", "food-insecurity", "housing-instability", "homelessness",
    "inadequate-housing", "transportation-insecurity", "financial-insecurity",
    "material-hardship", "educational-attainment", "employment-status", "veteran-status",
    "stress", "social-connection", "intimate-partner-violence", "elder-abuse",
    "personal-health-literacy", "health-insurance-coverage-status", "medical-cost-burden",
    "digital-literacy", "digital-access", "utility-insecurity", "incarceration-status",
    "language-access", "protective-factor"}
EVENT_STATUS = {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed",
                "entered-in-error", "unknown"}
REQUEST_STATUS = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error",
                  "unknown"}
REQUEST_INTENT = {"proposal", "plan", "directive", "order", "original-order", "reflex-order",
                  "filler-order", "instance-order", "option"}


def _codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in (concept or {}).get("coding") or [] if isinstance(c, dict)] \
        if isinstance(concept, dict) else []


def _has_code(concept: Any, system: str, code: str) -> bool:
    return any(c.get("system") == system and c.get("code") == code for c in _codings(concept))


def _ref_type(ref: Any) -> str:
    text = (ref or {}).get("reference", "") if isinstance(ref, dict) else ""
    parts = text.split("?")[0].rstrip("/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def check_task(t: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if t.get("status") not in REFERRAL_TASK_STATUS:
        out.append(("Task.status", f"{t.get('status')!r} is not in SDOHCC ValueSet Referral "
                                   "Task Status (required binding)"))
    if t.get("intent") != "order":
        out.append(("Task.intent", f"must be 'order' (fixed); found {t.get('intent')!r}"))
    if not _has_code(t.get("code"), TASK_CODE, "fulfill"):
        out.append(("Task.code", "must be task-code#fulfill (fixed)"))
    if _ref_type(t.get("focus")) != "ServiceRequest":
        out.append(("Task.focus", "1..1: a reference to the SDOHCC ServiceRequest"))
    if _ref_type(t.get("for")) not in ("Patient", "RelatedPerson", "Group"):
        out.append(("Task.for", "1..1: a reference to a Patient, RelatedPerson or Group"))
    if not t.get("authoredOn"):
        out.append(("Task.authoredOn", "1..1 is missing"))
    if _ref_type(t.get("requester")) not in ("PractitionerRole", "Organization"):
        out.append(("Task.requester", "1..1: a PractitionerRole or Organization reference"))
    reason = t.get("statusReason")
    if isinstance(reason, dict) and not reason.get("text"):
        out.append(("Task.statusReason.text", "1..1 when statusReason is present"))
    for i, part in enumerate(t.get("partOf") or []):
        if _ref_type(part) != "Task":
            out.append((f"Task.partOf[{i}]", "must reference a Task"))
    for i, output in enumerate(t.get("output") or []):
        codes = {c.get("code") for c in _codings(output.get("type"))
                 if c.get("system") == TEMP_CODES}
        if "resulting-activity" in codes:
            if "valueReference" in output and _ref_type(output["valueReference"]) \
                    not in ("Procedure", ""):
                out.append((f"Task.output[{i}].valueReference",
                            "a resulting-activity reference must point at an SDOHCC Procedure"))
            if "valueReference" not in output and "valueCodeableConcept" not in output:
                out.append((f"Task.output[{i}].value[x]", "resulting-activity needs a value"))
    return out


def check_service_request(sr: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if sr.get("status") not in REQUEST_STATUS:
        out.append(("ServiceRequest.status", f"{sr.get('status')!r} is not a request status"))
    if sr.get("intent") not in REQUEST_INTENT:
        out.append(("ServiceRequest.intent", f"{sr.get('intent')!r} is not a request intent"))
    if not _codings(sr.get("code")):
        out.append(("ServiceRequest.code", "1..1 coded (US Core Procedure Codes) is missing"))
    if _ref_type(sr.get("subject")) not in ("Patient", "Group", "Location"):
        out.append(("ServiceRequest.subject", "1..1: a Patient, Group or Location reference"))
    for field_ in ("specimen", "bodySite"):
        if sr.get(field_):
            out.append((f"ServiceRequest.{field_}", "0..0 in SDOHCC ServiceRequest"))
    for i, cat in enumerate(sr.get("category") or []):
        for c in _codings(cat):
            if c.get("system") == TEMP_CODES and c.get("code") not in SDOH_CATEGORIES:
                out.append((f"ServiceRequest.category[{i}]",
                            f"{c.get('code')!r} is not in SDOHCC ValueSet SDOH Category"))
    return out


def check_procedure(p: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if p.get("status") not in EVENT_STATUS:
        out.append(("Procedure.status", f"{p.get('status')!r} is not an event status"))
    if not _codings(p.get("code")):
        out.append(("Procedure.code", "1..1 coded (US Core Procedure Codes) is missing"))
    if _ref_type(p.get("subject")) != "Patient":
        out.append(("Procedure.subject", "1..1: a reference to the Patient"))
    if p.get("status") in ("completed", "in-progress") and not any(
            k.startswith("performed") for k in p):
        out.append(("Procedure.performed[x]", "us-core-7: required when status is completed "
                                              "or in-progress"))
    for i, based in enumerate(p.get("basedOn") or []):
        if _ref_type(based) not in ("ServiceRequest", "CarePlan"):
            out.append((f"Procedure.basedOn[{i}]", "must reference a ServiceRequest or "
                                                   "CarePlan"))
    return out


def check_consent(c: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not c.get("status"):
        out.append(("Consent.status", "1..1 is missing"))
    if not c.get("scope"):
        out.append(("Consent.scope", "1..1 is missing"))
    if not any(_has_code(cat, "http://terminology.hl7.org/CodeSystem/v3-ActCode", "IDSCL")
               for cat in c.get("category") or []):
        out.append(("Consent.category", "the IDSCL slice (v3-ActCode#IDSCL) is required"))
    if _ref_type(c.get("patient")) != "Patient":
        out.append(("Consent.patient", "1..1: a reference to the Patient"))
    if not c.get("dateTime"):
        out.append(("Consent.dateTime", "1..1 is missing"))
    if not c.get("organization"):
        out.append(("Consent.organization", "1..1 is missing"))
    if not any(k.startswith("source") for k in c):
        out.append(("Consent.source[x]", "1..1 is missing"))
    return out


def check_patient(p: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not p.get("identifier"):
        out.append(("Patient.identifier", "1..* (US Core) is missing"))
    if not p.get("name"):
        out.append(("Patient.name", "1..* (US Core) is missing"))
    if not p.get("gender"):
        out.append(("Patient.gender", "1..1 (US Core) is missing"))
    return out


def check_organization(o: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if "active" not in o:
        out.append(("Organization.active", "1..1 (US Core) is missing"))
    if not o.get("name"):
        out.append(("Organization.name", "1..1 (US Core) is missing"))
    return out


CHECKS: dict[str, Callable[[dict[str, Any]], list[tuple[str, str]]]] = {
    "Task": check_task, "ServiceRequest": check_service_request,
    "Procedure": check_procedure, "Consent": check_consent, "Patient": check_patient,
    "Organization": check_organization,
}


def profile_for(resource: dict[str, Any]) -> str | None:
    """The profile the kit holds a returned resource to."""
    return PROFILE.get(str(resource.get("resourceType")))


def check(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, message) for each rule the resource breaks; [] when it holds them all."""
    rule = CHECKS.get(str(resource.get("resourceType")))
    return rule(resource) if rule else []
