"""Conformant test data the kit creates: each resource carries the run's unique identifier."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

SD = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
USCORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
TEMP_CODES = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
KIT_ID_SYSTEM = "https://gravity-conformance-kit.example.org/id"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"

PROFILE = {
    "Task": SD + "SDOHCC-TaskForReferralManagement",
    "ServiceRequest": SD + "SDOHCC-ServiceRequest",
    "Procedure": SD + "SDOHCC-Procedure",
    "Consent": SD + "SDOHCC-Consent",
    "Patient": USCORE + "us-core-patient",
    "Organization": USCORE + "us-core-organization",
    "DocumentReference": USCORE + "us-core-documentreference",
}
# The behavioral-health service the kit refers for, and what the recipient reports back.
SERVICE_CODE = {"system": SNOMED, "code": "384692006", "display": "Mental health counseling"}
SDOH_CATEGORY = {"system": TEMP_CODES, "code": "stress", "display": "Stress"}
OTHER_CATEGORY = {"system": TEMP_CODES, "code": "food-insecurity"}
PROCEDURE_CODE = {"system": SNOMED, "code": "385721005", "display": "Counseling"}


def now() -> str:
    """Now as an instant with milliseconds (a second-precision value compared with a server's
    millisecond lastModified can make Task inv-1 fail in some validators)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def identifier(run_id: str, what: str) -> dict[str, str]:
    return {"system": KIT_ID_SYSTEM, "value": f"{run_id}-{what}"}


def organization(run_id: str, role: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "meta": {"profile": [PROFILE["Organization"]]},
            "identifier": [identifier(run_id, f"org-{role}")], "active": True,
            "name": f"Conformance kit {role} ({run_id})"}


def patient(run_id: str, n: int = 1) -> dict[str, Any]:
    return {"resourceType": "Patient", "meta": {"profile": [PROFILE["Patient"]]},
            "identifier": [identifier(run_id, f"patient-{n}")],
            "name": [{"family": f"Kit{run_id[-6:]}", "given": [f"Test{n}"]}],
            "gender": "unknown", "birthDate": "1990-01-01"}


def document(run_id: str, patient_ref: str) -> dict[str, Any]:
    text = base64.b64encode(b"Patient agrees to share referral information.").decode()
    return {"resourceType": "DocumentReference",
            "meta": {"profile": [PROFILE["DocumentReference"]]},
            "identifier": [identifier(run_id, "consent-form")], "status": "current",
            "type": {"coding": [{"system": LOINC, "code": "59284-0",
                                 "display": "Patient Consent"}]},
            "category": [{"coding": [{
                "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "code": "clinical-note"}]}],
            "subject": {"reference": patient_ref}, "date": now(),
            "content": [{"attachment": {"contentType": "text/plain", "data": text}}]}


def consent(run_id: str, patient_ref: str, org_ref: str, source_ref: str) -> dict[str, Any]:
    return {"resourceType": "Consent", "meta": {"profile": [PROFILE["Consent"]]},
            "identifier": [identifier(run_id, "consent")], "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                      "code": "IDSCL"}]}],
            "patient": {"reference": patient_ref}, "dateTime": now(),
            "organization": [{"reference": org_ref}],
            "sourceReference": {"reference": source_ref},
            "policyRule": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/consentpolicycodes",
                "code": "hipaa-auth"}]}}


def service_request(run_id: str, n: int, patient_ref: str, requester: str, performer: str,
                    consent_ref: str | None) -> dict[str, Any]:
    sr: dict[str, Any] = {
        "resourceType": "ServiceRequest", "meta": {"profile": [PROFILE["ServiceRequest"]]},
        "identifier": [identifier(run_id, f"referral-{n}")], "status": "active",
        "intent": "order", "category": [{"coding": [SDOH_CATEGORY]}],
        "code": {"coding": [SERVICE_CODE]}, "subject": {"reference": patient_ref},
        "occurrenceDateTime": now()[:10], "authoredOn": now(), "priority": "routine",
        "requester": {"reference": requester}, "performer": [{"reference": performer}],
    }
    if consent_ref:
        sr["supportingInfo"] = [{"reference": consent_ref}]
    return sr


def referral_task(run_id: str, n: int, sr_ref: str, patient_ref: str, requester: str,
                  owner: str | None, status: str = "requested") -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task", "meta": {"profile": [PROFILE["Task"]]},
        "identifier": [identifier(run_id, f"task-{n}")], "status": status, "intent": "order",
        "priority": "routine",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": {"reference": sr_ref}, "for": {"reference": patient_ref},
        "authoredOn": now(), "requester": {"reference": requester},
    }
    if owner:
        task["owner"] = {"reference": owner}
    return task


def procedure(run_id: str, n: int, patient_ref: str, sr_ref: str,
              performer: str) -> dict[str, Any]:
    return {"resourceType": "Procedure", "meta": {"profile": [PROFILE["Procedure"]]},
            "identifier": [identifier(run_id, f"procedure-{n}")], "status": "completed",
            "category": {"coding": [SDOH_CATEGORY]}, "code": {"coding": [PROCEDURE_CODE]},
            "subject": {"reference": patient_ref}, "basedOn": [{"reference": sr_ref}],
            "performedDateTime": now(), "performer": [{"actor": {"reference": performer}}]}


def resulting_activity(procedure_ref: str) -> dict[str, Any]:
    return {"type": {"coding": [{"system": TEMP_CODES, "code": "resulting-activity"}]},
            "valueReference": {"reference": procedure_ref}}


def subscription(endpoint: str, filter_criteria: str, content: str = "id-only",
                 channel: str = "rest-hook", lifetime: float = 300.0) -> dict[str, Any]:
    """A backport Subscription to the Gravity Task topic that ends after `lifetime` seconds
    (so a server that will not let the kit delete it stops sending soon anyway)."""
    end = (datetime.now(UTC) + timedelta(seconds=lifetime)).isoformat(
        timespec="milliseconds").replace("+00:00", "Z")
    return {
        "resourceType": "Subscription", "meta": {"profile": [BACKPORT + "backport-subscription"]},
        "status": "requested", "reason": "Gravity conformance kit: referral Task updates",
        "end": end, "criteria": TASK_TOPIC,
        "_criteria": {"extension": [{"url": BACKPORT + "backport-filter-criteria",
                                     "valueString": filter_criteria}]},
        "channel": {"type": channel, "endpoint": endpoint, "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": BACKPORT + "backport-payload-content",
                                                "valueCode": content}]}},
    }


def xml_patient(run_id: str) -> str:
    """A Patient in FHIR XML (for the XML create test)."""
    ident = identifier(run_id, "xml-patient")
    return ('<Patient xmlns="http://hl7.org/fhir">'
            f'<meta><profile value="{PROFILE["Patient"]}"/></meta>'
            f'<identifier><system value="{ident["system"]}"/><value value="{ident["value"]}"/>'
            '</identifier><name><family value="Kitxml"/><given value="Xml"/></name>'
            '<gender value="unknown"/><birthDate value="1990-01-01"/></Patient>')
