"""Small, valid R4 examples of the referral resource types (first-class in the tests)."""

from __future__ import annotations

import copy

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"

_SAMPLES: dict[str, dict] = {
    "Patient": {"resourceType": "Patient",
                "identifier": [{"system": "http://hospital.example/mrn", "value": "MRN-1"}],
                "name": [{"family": "Rivera", "given": ["Ana"]}], "gender": "female",
                "birthDate": "1990-04-02"},
    "Practitioner": {"resourceType": "Practitioner",
                     "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                     "value": "1234567893"}],
                     "name": [{"family": "Okafor", "given": ["Chidi"]}]},
    "PractitionerRole": {"resourceType": "PractitionerRole", "active": True,
                         "code": [{"coding": [{"system": SNOMED, "code": "309295000"}]}]},
    "Organization": {"resourceType": "Organization", "active": True, "name": "Harbor Clinic",
                     "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi",
                                     "value": "1144221847"}]},
    "Location": {"resourceType": "Location", "name": "Harbor Clinic Main",
                 "position": {"latitude": 42.36, "longitude": -71.06}},
    "HealthcareService": {"resourceType": "HealthcareService", "active": True,
                          "name": "Outpatient therapy",
                          "category": [{"coding": [{"system": SNOMED, "code": "394913002"}]}]},
    "Endpoint": {"resourceType": "Endpoint", "status": "active",
                 "connectionType": {"system":
                                    "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                                    "code": "hl7-fhir-rest"},
                 "payloadType": [{"text": "FHIR"}], "address": "https://cbo.example/fhir"},
    "ServiceRequest": {"resourceType": "ServiceRequest", "status": "active", "intent": "order",
                       "code": {"coding": [{"system": SNOMED, "code": "384692006"}]},
                       "subject": {"reference": "Patient/p1"}, "priority": "routine"},
    # A generic (non-referral) Task: referral Tasks follow the workflow rules, tested apart.
    "Task": {"resourceType": "Task", "status": "requested", "intent": "order",
             "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                  "code": "approve"}]},
             "focus": {"reference": "Consent/c1"}, "for": {"reference": "Patient/p1"},
             "authoredOn": "2026-11-01T10:00:00Z",
             "requester": {"reference": "Organization/o1"},
             "owner": {"reference": "Organization/o2"}},
    "Questionnaire": {"resourceType": "Questionnaire", "status": "active",
                      "url": "http://example.org/Questionnaire/q", "item": [
                          {"linkId": "1", "text": "Feeling down?", "type": "choice"}]},
    "QuestionnaireResponse": {"resourceType": "QuestionnaireResponse", "status": "completed",
                              "subject": {"reference": "Patient/p1"},
                              "item": [{"linkId": "1", "answer": [{"valueInteger": 2}]}]},
    "Observation": {"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
                    "subject": {"reference": "Patient/p1"},
                    "effectiveDateTime": "2026-11-01T10:00:00Z", "valueInteger": 12},
    "Condition": {"resourceType": "Condition",
                  "code": {"coding": [{"system": SNOMED, "code": "35489007"}]},
                  "subject": {"reference": "Patient/p1"}},
    "Goal": {"resourceType": "Goal", "lifecycleStatus": "active",
             "description": {"text": "Reduce PHQ-9 below 5"},
             "subject": {"reference": "Patient/p1"}},
    "Procedure": {"resourceType": "Procedure", "status": "completed",
                  "code": {"coding": [{"system": SNOMED, "code": "75516001"}]},
                  "subject": {"reference": "Patient/p1"}},
    "Consent": {"resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system":
                                      "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": LOINC, "code": "59284-0"}]}],
                "patient": {"reference": "Patient/p1"},
                "policyRule": {"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                    "code": "OPTIN"}]}},
    "CareTeam": {"resourceType": "CareTeam", "status": "active", "name": "BH team",
                 "subject": {"reference": "Patient/p1"}},
    "RelatedPerson": {"resourceType": "RelatedPerson", "patient": {"reference": "Patient/p1"},
                      "name": [{"family": "Rivera", "given": ["Luis"]}]},
    "DocumentReference": {"resourceType": "DocumentReference", "status": "current",
                          "content": [{"attachment": {"contentType": "text/plain",
                                                      "data": "aGVsbG8="}}]},
    "Group": {"resourceType": "Group", "type": "person", "actual": True, "name": "Cohort"},
    "Device": {"resourceType": "Device", "status": "active",
               "deviceName": [{"name": "Tablet", "type": "user-friendly-name"}]},
    "Subscription": {
        "resourceType": "Subscription", "status": "requested", "reason": "Referral updates",
        "meta": {"profile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                             "backport-subscription"]},
        "criteria": "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task",
        "_criteria": {"extension": [{
            "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                   "backport-filter-criteria",
            "valueString": "Task?owner=Organization/o2"}]},
        "channel": {"type": "rest-hook", "endpoint": "https://ehr.example/hook",
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{
                        "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
                               "backport-payload-content",
                        "valueCode": "id-only"}]}}},
    "Basic": {"resourceType": "Basic", "code": {"text": "note"}},
    "Communication": {"resourceType": "Communication", "status": "completed",
                      "payload": [{"contentString": "Referral received"}]},
    "Encounter": {"resourceType": "Encounter", "status": "finished",
                  "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "AMB"}},
    "Coverage": {"resourceType": "Coverage", "status": "active",
                 "beneficiary": {"reference": "Patient/p1"},
                 "payor": [{"reference": "Organization/o1"}]},
    "AuditEvent": {"resourceType": "AuditEvent",
                   "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                            "code": "rest"},
                   "recorded": "2026-11-01T10:00:00Z",
                   "agent": [{"requestor": True, "who": {"display": "tester"}}],
                   "source": {"observer": {"display": "server"}}},
    "Provenance": {"resourceType": "Provenance", "target": [{"reference": "Task/t1"}],
                   "recorded": "2026-11-01T10:00:00Z",
                   "agent": [{"who": {"reference": "Organization/o1"}}]},
}

REFERRAL_TYPES = tuple(_SAMPLES)


def sample(res_type: str, **changes: object) -> dict:
    """A fresh copy of the sample for `res_type`, with top-level changes applied."""
    resource = copy.deepcopy(_SAMPLES[res_type])
    resource.update(changes)
    return resource


def sample_world() -> list[dict]:
    """The resources the samples reference (Patient/p1, Organization/o1 and o2,
    Consent/c1, Task/t1), with those ids: a server refuses references to resources that do
    not exist, so tests load these first (fixture `sample_world`)."""
    return [
        sample("Patient", id="p1"),
        sample("Organization", id="o1", name="Harbor Clinic"),
        sample("Organization", id="o2", name="Riverside Counseling",
               identifier=[{"system": "http://hl7.org/fhir/sid/us-npi", "value": "1144221855"}]),
        sample("Consent", id="c1"),
        sample("Task", id="t1"),
    ]


def changed(base: dict, **changes: object) -> dict:
    """A deep copy of `base` with top-level elements replaced (None: removed)."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out
