"""Mutation tests: official examples (and two IG-3.0.0-based instances) broken one rule at a time
must be rejected, with an issue of the expected code at the expected FHIRPath expression.

Each mutation is ``(base, operations, expected expression, expected issue code)``; operations
are ``("del", path)``, ``("set", path, value)`` or ``("add", path, value)`` (append to a list),
with dotted paths whose numeric parts index arrays.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from profiles.base_r4 import validate_base
from profiles.loader import ProfileRegistry
from profiles.validator import Validator
from profiles.validator import validate as validate_profiles
from tests.reference_data import BACKPORT_SAMPLES, GRAVITY_EXAMPLES


def validate(resource: dict[str, Any]) -> list:
    """Base R4 (every core invariant) plus the profiles, as a write does."""
    return validate_base(resource) + validate_profiles(resource)


EXAMPLES = GRAVITY_EXAMPLES
SDOH = "http://hl7.org/fhir/us/sdoh-clinicalcare/"
CS = SDOH + "CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
US_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
SNOMED = "http://snomed.info/sct"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"

FILES = {
    "TRM": "Task-SDOHCC-TaskReferralManagementOrderFulfillmentCompletedExample",
    "TRA": "Task-SDOHCC-TaskReferralManagementOrderFulfillmentAcceptedExample",
    "TSA": "Task-SDOHCC-TaskReferralManagementOrderSubtaskAcceptedExample",
    "TSC": "Task-SDOHCC-TaskReferralManagementOrderSubtaskCompletedExample",
    "TPI": "Task-SDOHCC-TaskPatientInformationRequestCompletedExample",
    "TPM": "Task-SDOHCC-TaskPatientMakeAppointmentCompletedExample",
    "TPR": "Task-SDOHCC-TaskPatientReviewInformationCompletedExample",
    "TPQ": "Task-SDOHCC-TaskPatientRiskQuestionnaireCompletedExample",
    "SR1": "ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample",
    "SR2": "ServiceRequest-SDOHCC-ServiceRequestSubreferralGardenProgramExample",
    "SR3": "ServiceRequest-SDOHCC-ServiceRequestSubreferralSummerFoodProgramExample",
    "CON": "Consent-SDOHCC-ConsentInformationDisclosureExample",
    "CD1": "Condition-SDOHCC-ConditionFoodInsecurityExample",
    "CD2": "Condition-SDOHCC-ConditionHomelessExample",
    "CD4": "Condition-SDOHCC-ConditionAsserterDeviceExample",
    "GOAL": "Goal-SDOHCC-GoalFoodSecurityExample",
    "PR1": "Procedure-SDOHCC-ProcedureProvisionOfFoodExample",
    "PR2": "Procedure-SDOHCC-ProcedureFoodPantryApplicationAssistanceExample",
    "OSR": "Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion3Example",
    "OSG": "Observation-SDOHCC-ObservationResponseNHANESGroupingExample",
    "OSP": "Observation-SDOHCC-ObservationResponsePRAPAREHousingStatusExample",
    "OA1": "Observation-SDOHCC-ObservationAssessmentInadequateFoodIntakeExample",
    "OA2": "Observation-SDOHCC-ObservationAssessmentTransportTooExpensiveExample",
    "HCS": "HealthcareService-SDOHCC-HealthcareServiceTelecomAppointmentExample",
    "LOC": "Location-SDOHCC-LocationExample",
    "PRR": "PractitionerRole-SDOHCC-PractitionerRoleDrJanWaterExample",
    "GRP": "Group-SDOHCC-GroupSDOHPatientsForPayerExample",
    "PAT": "Patient-pat-53234",
    "ORG": "Organization-SDOHCC-OrganizationPayerExample",
    "PRA": "Practitioner-SDOHCC-PractitionerDrJanWaterExample",
    "QR1": "QuestionnaireResponse-SDOHCC-QuestionnaireResponseHungerVitalSignExample",
}


def cc(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def _constructed() -> dict[str, dict[str, Any]]:
    """Instances for profiles without a 2.3.0 example, after the IG 3.0.0 FSH instances."""
    hcsrm = {
        "resourceType": "HealthcareService", "id": "social-care-program",
        "meta": {"profile": [
            SDOH + "StructureDefinition/SDOHCC-HealthcareServiceForReferralManagement"]},
        "extension": [{
            "url": SDOH + "StructureDefinition/SDOHCC-ExtensionHealthcareServiceCapacityStatus",
            "extension": [{"url": "capacityStatus", "valueCodeableConcept": cc(CS, "capacity")},
                          {"url": "capacityNotes", "valueString": "Accepting new clients"}]}],
        "active": True,
        "category": [{"coding": [
            {"system": US_CAT, "code": "sdoh"},
            {"system": CS, "code": "food-insecurity"}]}],
        "type": [cc("http://terminology.hl7.org/CodeSystem/service-type", "152")],
        "name": "Community food program",
    }
    pes = {
        "resourceType": "Observation", "id": "enrollment",
        "meta": {"profile": [
            SDOH + "StructureDefinition/SDOHCC-ObservationProgramEnrollmentStatus"]},
        "status": "final",
        "category": [cc(US_CAT, "sdoh"), cc(CS, "program-enrollment"),
                     cc(CS, "food-insecurity")],
        "code": cc("http://loinc.org", "LP12345-6"),
        "subject": ref("Patient/pat-53234"),
        "effectiveDateTime": "2025-01-02",
        "valueCodeableConcept": cc(CS, "enrolled"),
        "focus": [ref("HealthcareService/social-care-program")],
    }
    sub = json.loads((BACKPORT_SAMPLES /
                      "Subscription_id-only.json").read_text("utf-8"))
    return {"HRM": hcsrm, "PES": pes, "SUB": sub}


def base(key: str) -> dict[str, Any]:
    if key in FILES:
        res = json.loads((EXAMPLES / f"{FILES[key]}.json").read_text("utf-8"))
        if key == "GRP":  # the 3.0.0 form (FHIR-52375): valueCodeableConcept
            res["characteristic"][0].pop("valueReference")
            res["characteristic"][0]["valueCodeableConcept"] = cc(CS, "food-insecurity")
        return res
    return copy.deepcopy(CONSTRUCTED[key])


CONSTRUCTED = _constructed()

PAPR = cc(CS, "resulting-activity")
ADDC = cc(CS, "additional-content")

MUTATIONS: list[tuple[str, list[tuple], str, str]] = [
    # ---------------- SDOHCC Task For Referral Management ----------------
    ("TRM", [("del", "focus")], "Task.focus", "required"),
    ("TRA", [("del", "focus")], "Task.focus", "required"),
    ("TRM", [("del", "for")], "Task.for", "required"),
    ("TSA", [("del", "for")], "Task.for", "required"),
    ("TRM", [("del", "authoredOn")], "Task.authoredOn", "required"),
    ("TSC", [("del", "authoredOn")], "Task.authoredOn", "required"),
    ("TRM", [("del", "requester")], "Task.requester", "required"),
    ("TRA", [("del", "requester")], "Task.requester", "required"),
    ("TRM", [("del", "code")], "Task.code", "required"),
    ("TRM", [("set", "statusReason", {"coding": [{"code": "x"}]})], "Task.statusReason.text",
     "required"),
    ("TRM", [("set", "intent", "plan")], "Task.intent", "value"),
    ("TRA", [("set", "intent", "proposal")], "Task.intent", "value"),
    ("TSA", [("set", "intent", "filler-order")], "Task.intent", "value"),
    ("TRM", [("set", "code.coding.0.code", "approve")], "Task.code", "value"),
    ("TRA", [("set", "code.coding.0.system", "http://example.org/cs")], "Task.code", "value"),
    ("TSC", [("set", "code", cc(CS, "make-contact"))], "Task.code", "value"),
    ("TRM", [("set", "status", "ready")], "Task.status", "code-invalid"),
    ("TRA", [("set", "status", "received")], "Task.status", "code-invalid"),
    ("TSA", [("set", "status", "finished")], "Task.status", "code-invalid"),
    ("TRM", [("set", "focus", ref("Patient/x"))], "Task.focus", "structure"),
    ("TRA", [("set", "focus", ref("Task/x"))], "Task.focus", "structure"),
    ("TSA", [("set", "focus", ref("http://ehr.example.org/fhir/CarePlan/1"))], "Task.focus",
     "structure"),
    ("TRM", [("set", "for", ref("Practitioner/x"))], "Task.for", "structure"),
    ("TRA", [("set", "for", ref("Organization/x"))], "Task.for", "structure"),
    ("TRM", [("set", "requester", ref("Patient/x"))], "Task.requester", "structure"),
    ("TSA", [("set", "requester", ref("Practitioner/x"))], "Task.requester", "structure"),
    ("TRA", [("set", "requester", ref("Device/x"))], "Task.requester", "structure"),
    ("TRM", [("set", "output.0.valueReference", ref("Observation/1"))],
     "Task.output[0].value.ofType(Reference)", "structure"),
    ("TSC", [("set", "output.0.valueReference", ref("Condition/1"))],
     "Task.output[0].value.ofType(Reference)", "structure"),
    ("TRM", [("add", "output", {"type": PAPR,
                                "valueCodeableConcept": cc("http://example.org/cs", "x")})],
     "Task.output[1].value.ofType(CodeableConcept)", "code-invalid"),
    ("TRM", [("add", "output", {"type": ADDC, "valueReference": ref("Practitioner/x")})],
     "Task.output[1].value.ofType(Reference)", "structure"),
    ("TSC", [("add", "output", {"type": ADDC, "valueReference": ref("Device/x")})],
     "Task.output[1].value.ofType(Reference)", "structure"),
    ("TRM", [("set", "lastModified", "2000-01-01T00:00:00Z")], "Task", "invariant"),
    ("TSA", [("set", "lastModified", "2001-01-01")], "Task", "invariant"),
    # ---------------- SDOHCC Task For Patient ----------------
    ("TPI", [("del", "priority")], "Task.priority", "required"),
    ("TPM", [("del", "owner")], "Task.owner", "required"),
    ("TPR", [("del", "for")], "Task.for", "required"),
    ("TPQ", [("del", "requester")], "Task.requester", "required"),
    ("TPI", [("del", "authoredOn")], "Task.authoredOn", "required"),
    ("TPM", [("del", "code")], "Task.code", "required"),
    ("TPI", [("set", "intent", "plan")], "Task.intent", "value"),
    ("TPQ", [("set", "intent", "proposal")], "Task.intent", "value"),
    ("TPI", [("set", "priority", "stat")], "Task.priority", "code-invalid"),
    ("TPM", [("set", "priority", "asap")], "Task.priority", "code-invalid"),
    ("TPR", [("set", "status", "requested")], "Task.status", "code-invalid"),
    ("TPQ", [("set", "status", "accepted")], "Task.status", "code-invalid"),
    ("TPI", [("set", "owner", ref("Practitioner/x"))], "Task.owner", "structure"),
    ("TPM", [("set", "owner", ref("Organization/x"))], "Task.owner", "structure"),
    ("TPR", [("set", "for", ref("Group/x"))], "Task.for", "structure"),
    ("TPQ", [("set", "requester", ref("Patient/x"))], "Task.requester", "structure"),
    ("TPM", [("set", "input.0.valueReference", ref("Patient/x"))],
     "Task.input[0].value.ofType(Reference)", "structure"),
    ("TPQ", [("set", "input.1.valueCodeableConcept", cc(CS, "food-insecurity"))],
     "Task.input[1].value.ofType(CodeableConcept)", "code-invalid"),
    ("TPQ", [("set", "input.0.valueString", "hvs"), ("del", "input.0.valueCanonical")],
     "Task.input[0].value.ofType(string)", "structure"),
    ("TPQ", [("set", "output.0.valueReference", ref("Observation/x"))],
     "Task.output[0].value.ofType(Reference)", "structure"),
    ("TPI", [("set", "output.0.valueString", "Safeway"), ("del", "output.0.valueMarkdown")],
     "Task.output[0].value.ofType(string)", "structure"),
    ("TPQ", [("add", "input", {"type": cc(SDC_TEMP, "questionnaire"),
                               "valueCanonical": "http://x/Questionnaire/2"})],
     "Task.input", "structure"),
    ("TPQ", [("add", "output", {"type": cc(SDC_TEMP, "questionnaire-response"),
                                "valueReference": ref("QuestionnaireResponse/2")})],
     "Task.output", "structure"),
    ("TPQ", [("del", "input.1")], "Task", "invariant"),  # SDOH-Task-1
    ("TPQ", [("add", "input", {"type": cc(CS, "questionnaire-url"),
                               "valueUrl": "http://x/q"})], "Task", "invariant"),  # Task-1
    ("TPI", [("del", "description")], "Task", "invariant"),  # SDOH-Task-2
    ("TPR", [("set", "focus", ref("Questionnaire/x"))], "Task", "invariant"),  # SDOH-Task-3
    ("TPR", [("set", "focus", ref("Patient/x"))], "Task", "invariant"),  # SDOH-Task-3
    ("TPM", [("set", "input.0.type", cc(CS, "questionnaire-category"))], "Task",
     "invariant"),  # SDOH-Task-4
    ("TPQ", [("set", "output.0.type", cc(CS, "chosen-contact"))], "Task",
     "invariant"),  # SDOH-Task-5
    ("TPM", [("del", "description")], "Task", "invariant"),  # SDOH-Task-7
    ("TPM", [("del", "input")], "Task", "invariant"),  # SDOH-Task-4
    ("TPI", [("set", "statusReason", {"coding": [{"code": "x"}]})], "Task.statusReason.text",
     "required"),
    # ---------------- SDOHCC ServiceRequest (+ US Core ServiceRequest) ----------------
    ("SR1", [("del", "subject")], "ServiceRequest.subject", "required"),
    ("SR2", [("del", "subject")], "ServiceRequest.subject", "required"),
    ("SR1", [("del", "code")], "ServiceRequest.code", "required"),
    ("SR3", [("del", "code")], "ServiceRequest.code", "required"),
    ("SR1", [("del", "status")], "ServiceRequest.status", "required"),
    ("SR2", [("del", "intent")], "ServiceRequest.intent", "required"),
    ("SR1", [("set", "status", "cancelled")], "ServiceRequest.status", "code-invalid"),
    ("SR3", [("set", "intent", "order-plan")], "ServiceRequest.intent", "code-invalid"),
    ("SR1", [("set", "priority", "soon")], "ServiceRequest.priority", "code-invalid"),
    ("SR1", [("set", "code", cc("http://example.org/cs", "x"))], "ServiceRequest.code",
     "code-invalid"),
    ("SR2", [("set", "code", {"text": "food help"})], "ServiceRequest.code", "code-invalid"),
    ("SR1", [("set", "subject", ref("Practitioner/x"))], "ServiceRequest.subject", "structure"),
    ("SR2", [("set", "subject", ref("Organization/x"))], "ServiceRequest.subject", "structure"),
    ("SR1", [("set", "requester", ref("CareTeam/x"))], "ServiceRequest.requester", "structure"),
    ("SR3", [("set", "requester", ref("HealthcareService/x"))], "ServiceRequest.requester",
     "structure"),
    ("SR1", [("set", "performer", [ref("Location/x")])], "ServiceRequest.performer[0]",
     "structure"),
    ("SR2", [("set", "basedOn.0", ref("Task/x"))], "ServiceRequest.basedOn[0]", "structure"),
    ("SR1", [("set", "requester", ref("Location/x"))], "ServiceRequest.requester",
     "structure"),
    ("SR1", [("set", "specimen", [ref("Specimen/1")])], "ServiceRequest.specimen",
     "structure"),
    ("SR2", [("set", "bodySite", [cc(SNOMED, "12345")])], "ServiceRequest.bodySite",
     "structure"),
    ("SR1", [("set", "extension", [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                           "resource-pertainsToGoal",
                                    "valueReference": ref("Condition/x")}])],
     "ServiceRequest.extension[0].value.ofType(Reference)", "structure"),
    ("SR1", [("set", "orderDetail", [cc(CS, "contacting-subject-prohibited"),
                                     cc(CS, "contacting-subject-prohibited")])],
     "ServiceRequest.orderDetail", "structure"),
    ("SR3", [("set", "orderDetail", [cc(CS, "contacting-subject-prohibited")]),
             ("del", "code")], "ServiceRequest", "invariant"),  # prr-1
    # ---------------- SDOHCC Consent ----------------
    ("CON", [("del", "patient")], "Consent.patient", "required"),
    ("CON", [("del", "dateTime")], "Consent.dateTime", "required"),
    ("CON", [("del", "organization")], "Consent.organization", "required"),
    ("CON", [("del", "sourceAttachment")], "Consent.source", "required"),
    ("CON", [("set", "category", [cc("http://loinc.org", "59284-0")])], "Consent.category",
     "required"),
    ("CON", [("set", "category.0.coding.0.code", "IDSCLX")], "Consent.category", "required"),
    ("CON", [("add", "organization", ref("Organization/other"))], "Consent.organization[1]",
     "structure"),
    ("CON", [("set", "patient", ref("Group/x"))], "Consent.patient", "structure"),
    ("CON", [("set", "organization.0", ref("Practitioner/x"))], "Consent.organization[0]",
     "structure"),
    ("CON", [("del", "sourceAttachment"), ("set", "sourceReference", ref("Patient/x"))],
     "Consent.source.ofType(Reference)", "structure"),
    ("CON", [("set", "performer", [ref("Device/x")])], "Consent.performer[0]", "structure"),
    ("CON", [("set", "status", "approved")], "Consent.status", "code-invalid"),
    ("CON", [("set", "category", [cc("http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                     "IDSCL"), cc("http://terminology.hl7.org/CodeSystem/"
                                                  "v3-ActCode", "IDSCL")])],
     "Consent.category", "structure"),
    # ---------------- SDOHCC Condition ----------------
    ("CD1", [("del", "code")], "Condition.code", "required"),
    ("CD2", [("del", "code")], "Condition.code", "required"),
    ("CD1", [("del", "category.1")], "Condition.category", "required"),  # screening-assessment
    ("CD1", [("set", "category", [cc(US_CAT, "sdoh")])], "Condition.category", "required"),
    ("CD1", [("del", "category.1")], "Condition", "invariant"),  # SDOH-Con-3
    ("CD2", [("set", "category", [cc(US_CAT, "sdoh"), cc(CS, "homelessness")])], "Condition",
     "invariant"),  # SDOH-Con-2
    ("CD4", [("set", "asserter", ref("Patient/pat-53234"))], "Condition",
     "invariant"),  # SDOH-Con-1
    ("CD1", [("set", "clinicalStatus", cc("http://terminology.hl7.org/CodeSystem/"
                                          "condition-clinical", "gone"))],
     "Condition.clinicalStatus", "code-invalid"),
    ("CD2", [("set", "verificationStatus", cc("http://example.org", "unconfirmed"))],
     "Condition.verificationStatus", "code-invalid"),
    ("CD1", [("set", "code", cc("http://loinc.org", "88124-3"))], "Condition.code",
     "code-invalid"),
    ("CD1", [("set", "subject", ref("Group/x"))], "Condition.subject", "structure"),
    ("CD2", [("set", "encounter", ref("Patient/x"))], "Condition.encounter", "structure"),
    ("CD1", [("set", "asserter", ref("Organization/x"))], "Condition.asserter", "structure"),
    ("CD2", [("set", "recorder", ref("Patient/x"))], "Condition.recorder", "structure"),
    ("CD1", [("del", "onsetPeriod"), ("set", "onsetAge", {"value": 3})],
     "Condition.onset.ofType(Age)", "structure"),
    ("CD1", [("set", "abatementString", "gone")], "Condition.abatement.ofType(string)",
     "structure"),
    ("CD1", [("set", "bodySite", [cc(SNOMED, "1")])], "Condition.bodySite", "structure"),
    ("CD2", [("set", "stage", [{"summary": cc(SNOMED, "1")}])], "Condition.stage",
     "structure"),
    ("CD4", [("set", "extension.0.valueReference", ref("Practitioner/x"))],
     "Condition.extension[0].value.ofType(Reference)", "structure"),
    ("CD1", [("add", "category", cc("http://hl7.org/fhir/us/core/CodeSystem/condition-category",
                                     "encounter-diagnosis")),
             ("set", "category.3.coding.0.system",
              "http://terminology.hl7.org/CodeSystem/condition-category"),
             ("add", "category", cc("http://terminology.hl7.org/CodeSystem/condition-category",
                                    "encounter-diagnosis"))],
     "Condition.category", "structure"),  # encounter-diagnosis slice max 1
    # ---------------- SDOHCC Goal (+ US Core Goal) ----------------
    ("GOAL", [("del", "description")], "Goal.description", "required"),
    ("GOAL", [("del", "subject")], "Goal.subject", "required"),
    ("GOAL", [("set", "subject", ref("Group/x"))], "Goal.subject", "structure"),
    ("GOAL", [("set", "lifecycleStatus", "done")], "Goal.lifecycleStatus", "code-invalid"),
    ("GOAL", [("set", "addresses.0", ref("Procedure/x"))], "Goal.addresses[0]", "structure"),
    ("GOAL", [("set", "expressedBy", ref("Organization/x"))], "Goal.expressedBy", "structure"),
    ("GOAL", [("del", "lifecycleStatus")], "Goal.lifecycleStatus", "required"),
    # ---------------- SDOHCC Procedure ----------------
    ("PR1", [("del", "code")], "Procedure.code", "required"),
    ("PR2", [("del", "code")], "Procedure.code", "required"),
    ("PR1", [("del", "performedDateTime")], "Procedure", "invariant"),  # us-core-7
    ("PR2", [("del", "performedDateTime"), ("set", "status", "in-progress")], "Procedure",
     "invariant"),
    ("PR1", [("set", "status", "done")], "Procedure.status", "code-invalid"),
    ("PR1", [("set", "code", cc("http://example.org", "food"))], "Procedure.code",
     "code-invalid"),
    ("PR1", [("set", "subject", ref("Group/x"))], "Procedure.subject", "structure"),
    ("PR2", [("set", "basedOn.0", ref("Task/x"))], "Procedure.basedOn[0]", "structure"),
    ("PR1", [("set", "encounter", ref("Observation/x"))], "Procedure.encounter", "structure"),
    ("PR2", [("set", "reasonReference.0", ref("Patient/x"))], "Procedure.reasonReference[0]",
     "structure"),
    ("PR1", [("set", "extension", [{"url": "http://hl7.org/fhir/StructureDefinition/"
                                           "resource-pertainsToGoal",
                                    "valueReference": ref("Condition/x")}])],
     "Procedure.extension[0].value.ofType(Reference)", "structure"),
    ("PR1", [("add", "category.coding", {"system": CS, "code": "housing-instability"})],
     "Procedure.category.coding", "structure"),  # SDOHCC coding slice max 1
    # ---------------- SDOHCC Observation Screening Response ----------------
    ("OSR", [("del", "subject")], "Observation.subject", "required"),
    ("OSG", [("del", "subject")], "Observation.subject", "required"),
    ("OSR", [("del", "effectiveDateTime")], "Observation.effective", "required"),
    ("OSP", [("del", "effectiveDateTime")], "Observation.effective", "required"),
    ("OSR", [("del", "code")], "Observation.code", "required"),
    ("OSR", [("set", "category", [cc(US_CAT, "sdoh")])], "Observation.category", "required"),
    ("OSR", [("del", "category.1")], "Observation", "invariant"),  # SDOH-Obs-4
    ("OSG", [("del", "category.1")], "Observation", "invariant"),
    ("OSR", [("set", "status", "preliminary")], "Observation.status", "code-invalid"),
    ("OSP", [("set", "status", "registered")], "Observation.status", "code-invalid"),
    ("OSR", [("set", "code", cc(SNOMED, "1234"))], "Observation.code", "code-invalid"),
    ("OSR", [("set", "subject", ref("Group/x"))], "Observation.subject", "structure"),
    ("OSP", [("set", "subject", ref("Location/x"))], "Observation.subject", "structure"),
    ("OSR", [("set", "performer.0", ref("Device/x"))], "Observation.performer[0]",
     "structure"),
    ("OSR", [("set", "derivedFrom.0", ref("Media/x"))], "Observation.derivedFrom[0]",
     "structure"),
    ("OSG", [("set", "hasMember.0", ref("Condition/x"))], "Observation.hasMember[0]",
     "structure"),
    ("OSR", [("del", "effectiveDateTime"), ("set", "effectiveInstant", "2020-09-10T21:56:54Z")],
     "Observation.effective.ofType(instant)", "structure"),
    ("OSR", [("set", "bodySite", cc(SNOMED, "1"))], "Observation.bodySite", "structure"),
    ("OSP", [("set", "specimen", ref("Specimen/1"))], "Observation.specimen", "structure"),
    ("OSR", [("add", "category", cc("http://terminology.hl7.org/CodeSystem/"
                                    "observation-category", "survey"))],
     "Observation.category", "structure"),  # survey slice max 1
    ("OSR", [("set", "category.1", cc(US_CAT, "sdoh-x"))], "Observation", "invariant"),
    # ---------------- SDOHCC Observation Assessment (+ US Core Simple Observation) -------------
    ("OA1", [("del", "subject")], "Observation.subject", "required"),
    ("OA2", [("del", "subject")], "Observation.subject", "required"),
    ("OA1", [("del", "code")], "Observation.code", "required"),
    ("OA1", [("set", "category", [cc(CS, "food-insecurity")])], "Observation.category",
     "required"),  # us-core slice 1..*
    ("OA1", [("del", "valueBoolean")], "Observation", "invariant"),  # us-core-2
    ("OA2", [("del", "category.0")], "Observation", "invariant"),  # SDOH-Obs-4
    ("OA1", [("set", "subject", ref("Device/x"))], "Observation.subject", "structure"),
    ("OA1", [("set", "performer.0", ref("Device/x"))], "Observation.performer[0]",
     "structure"),
    ("OA2", [("set", "derivedFrom", [ref("Procedure/x")])], "Observation.derivedFrom[0]",
     "structure"),
    ("OA1", [("set", "subject", ref("Location/x"))], "Observation.subject", "structure"),
    ("OA1", [("set", "status", "done")], "Observation.status", "code-invalid"),
    ("OA2", [("del", "status")], "Observation.status", "required"),
    # ---------------- SDOHCC Observation Program Enrollment Status ----------------
    ("PES", [("del", "valueCodeableConcept")], "Observation.value", "required"),
    ("PES", [("del", "subject")], "Observation.subject", "required"),
    ("PES", [("set", "category", [cc(CS, "program-enrollment")])], "Observation.category",
     "required"),  # category[us-core] 1..*
    ("PES", [("set", "focus", [ref("Patient/x")])], "Observation.focus[0]", "structure"),
    ("PES", [("add", "category", cc(CS, "program-enrollment"))], "Observation.category",
     "structure"),  # enrollment slice max 1
    ("PES", [("set", "category", [cc(CS, "food-insecurity"), cc(CS, "program-enrollment")])],
     "Observation.category", "required"),
    # ---------------- SDOHCC HealthcareService ----------------
    ("HCS", [("del", "active")], "HealthcareService.active", "required"),
    ("HCS", [("set", "active", False)], "HealthcareService.active", "value"),
    ("HCS", [("del", "telecom")], "HealthcareService.telecom", "required"),
    ("HCS", [("del", "telecom.0.extension"), ("del", "telecom.1.extension")],
     "HealthcareService.telecom", "required"),
    ("HCS", [("set", "telecom.0.extension.0.valueBoolean", False)],
     "HealthcareService.telecom[0].extension[0].value.ofType(boolean)", "value"),
    ("HCS", [("del", "telecom.0.value")], "HealthcareService.telecom[0].value", "required"),
    ("HCS", [("del", "telecom.1.system")], "HealthcareService.telecom[1].system", "required"),
    ("HCS", [("set", "location.0", ref("Organization/x"))], "HealthcareService.location[0]",
     "structure"),
    ("HCS", [("add", "telecom.0.extension", copy.deepcopy(
        {"url": SDOH + "StructureDefinition/SDOHCC-ExtensionHealthcareServiceTelecomAppointment",
         "valueBoolean": True}))], "HealthcareService.telecom[0].extension", "structure"),
    # ---------------- SDOHCC HealthcareService For Referral Management ----------------
    ("HRM", [("del", "extension")], "HealthcareService.extension", "required"),
    ("HRM", [("del", "name")], "HealthcareService.name", "required"),
    ("HRM", [("del", "category")], "HealthcareService.category", "required"),
    ("HRM", [("del", "type")], "HealthcareService.type", "required"),
    ("HRM", [("add", "type", cc("http://terminology.hl7.org/CodeSystem/service-type", "289"))],
     "HealthcareService.type[1]", "structure"),
    ("HRM", [("set", "active", False)], "HealthcareService.active", "value"),
    ("HRM", [("del", "category.0.coding.0")], "HealthcareService.category[0].coding",
     "required"),  # ServiceCategory slice 1..1
    ("HRM", [("del", "extension.0.extension.0")],
     "HealthcareService.extension[0].extension", "required"),  # capacityStatus 1..1
    ("HRM", [("set", "extension.0.extension.1.valueInteger", 3),
             ("del", "extension.0.extension.1.valueString")],
     "HealthcareService.extension[0].extension[1].value.ofType(integer)", "structure"),
    # ---------------- SDOHCC Location (+ US Core Location) ----------------
    ("LOC", [("del", "address")], "Location.address", "required"),
    ("LOC", [("del", "name")], "Location.name", "required"),
    ("LOC", [("set", "managingOrganization", ref("Patient/x"))],
     "Location.managingOrganization", "structure"),
    ("LOC", [("set", "status", "open")], "Location.status", "code-invalid"),
    # ---------------- SDOHCC PractitionerRole (+ US Core PractitionerRole) ----------------
    ("PRR", [("del", "practitioner")], "PractitionerRole.practitioner", "required"),
    ("PRR", [("del", "organization")], "PractitionerRole.organization", "required"),
    ("PRR", [("set", "practitioner", ref("Patient/x"))], "PractitionerRole.practitioner",
     "structure"),
    ("PRR", [("set", "organization", ref("Practitioner/x"))], "PractitionerRole.organization",
     "structure"),
    ("PRR", [("del", "telecom.0.system")], "PractitionerRole.telecom[0].system", "required"),
    ("PRR", [("del", "telecom.1.value")], "PractitionerRole.telecom[1].value", "required"),
    # ---------------- SDOHCC Group ----------------
    ("GRP", [("del", "active")], "Group.active", "required"),
    ("GRP", [("set", "active", False)], "Group.active", "value"),
    ("GRP", [("set", "type", "device")], "Group.type", "value"),
    ("GRP", [("set", "actual", False)], "Group.actual", "value"),
    ("GRP", [("del", "characteristic.1")], "Group.characteristic", "required"),  # HasPayer
    ("GRP", [("del", "characteristic.0")], "Group.characteristic", "required"),
    ("GRP", [("set", "characteristic.1.exclude", True)], "Group.characteristic[1].exclude",
     "value"),
    ("GRP", [("set", "characteristic.1.valueReference", ref("Patient/x"))],
     "Group.characteristic[1].value.ofType(Reference)", "structure"),
    ("GRP", [("add", "characteristic", copy.deepcopy(
        {"code": cc(CS, "payer-coverage"), "valueReference": ref("Organization/o2"),
         "exclude": False}))], "Group.characteristic", "structure"),  # HasPayer max 1
    ("GRP", [("set", "characteristic.0.period", {"start": "2020-01-01"})],
     "Group.characteristic[0].period", "structure"),
    # ---------------- US Core Patient ----------------
    ("PAT", [("del", "identifier")], "Patient.identifier", "required"),
    ("PAT", [("del", "name")], "Patient.name", "required"),
    ("PAT", [("del", "gender")], "Patient.gender", "required"),
    ("PAT", [("set", "gender", "M")], "Patient.gender", "code-invalid"),
    ("PAT", [("del", "identifier.0.system")], "Patient.identifier[0].system", "required"),
    ("PAT", [("del", "identifier.0.value")], "Patient.identifier[0].value", "required"),
    ("PAT", [("set", "name", [{"text": "Colin"}])], "Patient", "invariant"),  # us-core-6
    ("PAT", [("set", "telecom", [{"value": "555"}])], "Patient.telecom[0].system", "required"),
    ("PAT", [("set", "telecom", [{"system": "telex", "value": "555"}])],
     "Patient.telecom[0].system", "code-invalid"),
    ("PAT", [("set", "link", [{"type": "seealso"}])], "Patient.link[0].other", "required"),
    # ---------------- US Core Organization / Practitioner ----------------
    ("ORG", [("del", "name")], "Organization.name", "required"),
    ("ORG", [("del", "active")], "Organization.active", "required"),
    ("ORG", [("set", "address.0.line", ["1", "2", "3", "4", "5"])],
     "Organization.address[0].line[4]", "structure"),
    ("PRA", [("del", "identifier")], "Practitioner.identifier", "required"),
    ("PRA", [("del", "name")], "Practitioner.name", "required"),
    ("PRA", [("del", "name.0.family")], "Practitioner.name[0].family", "required"),
    ("PRA", [("del", "identifier.1.value")], "Practitioner.identifier[1].value", "required"),
    # ---------------- SDC QuestionnaireResponse / backport Subscription ----------------
    ("QR1", [("del", "questionnaire"), ("del", "_questionnaire")],
     "QuestionnaireResponse.questionnaire", "required"),
    ("QR1", [("set", "status", "done")], "QuestionnaireResponse.status", "code-invalid"),
    ("SUB", [("del", "criteria"), ("del", "_criteria")], "Subscription.criteria", "required"),
    ("SUB", [("del", "channel._payload")], "Subscription.channel.payload.extension",
     "required"),
    ("SUB", [("set", "channel._payload.extension.0.valueCode", "everything")],
     "Subscription.channel.payload.extension[0].value.ofType(code)", "code-invalid"),
    ("SUB", [("set", "status", "paused")], "Subscription.status", "code-invalid"),
    ("SUB", [("set", "channel.type", "carrier-pigeon")], "Subscription.channel.type",
     "code-invalid"),
]


def _walk(obj: Any, path: str) -> tuple[Any, str | int]:
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in path.split(".")]
    for p in parts[:-1]:
        obj = obj[p]
    return obj, parts[-1]


def mutate(resource: dict[str, Any], ops: list[tuple]) -> dict[str, Any]:
    res = copy.deepcopy(resource)
    for op in ops:
        holder, last = _walk(res, op[1])
        if op[0] == "del":
            del holder[last]
        elif op[0] == "set":
            holder[last] = copy.deepcopy(op[2])
        else:
            holder.setdefault(last, []).append(copy.deepcopy(op[2]))
    return res


def test_at_least_150_mutations():
    assert len(MUTATIONS) >= 150


@pytest.mark.parametrize("key", sorted({m[0] for m in MUTATIONS}))
def test_unmutated_base_is_valid(key):
    issues = validate(base(key))
    assert not [i for i in issues if i.severity == "error"], [i.to_fhir() for i in issues]


@pytest.mark.parametrize("key,ops,expr,code", MUTATIONS,
                         ids=[f"{i:03d}-{m[0]}-{m[2]}" for i, m in enumerate(MUTATIONS)])
def test_mutation_rejected(key, ops, expr, code):
    issues = validate(mutate(base(key), ops))
    found = [(i.code, i.expression) for i in issues if i.severity == "error"]
    assert (code, [expr]) in found, found


# ---- closed slicing: test-only variants of shipped profiles with ``rules = closed`` ----------
CLOSED = [
    ("CON", "SDOHCC-Consent", "Consent.category",
     [("add", "category", cc("http://loinc.org", "59284-0"))], "Consent.category[1]"),
    ("TRM", "SDOHCC-TaskForReferralManagement", "Task.output",
     [("add", "output", {"type": cc("http://example.org", "note"), "valueString": "x"})],
     "Task.output[1]"),
    ("SR1", "SDOHCC-ServiceRequest", "ServiceRequest.category",
     [("add", "category", cc("http://example.org", "other"))], "ServiceRequest.category[2]"),
    ("CD1", "SDOHCC-Condition", "Condition.category",
     [("add", "category", cc("http://example.org", "x"))], "Condition.category[3]"),
    ("HCS", "SDOHCC-HealthcareService", "HealthcareService.telecom",
     [], "HealthcareService.telecom[2]"),
    ("PR1", "SDOHCC-Procedure", "Procedure.category.coding",
     [("add", "category.coding", {"system": "http://example.org", "code": "x"})],
     "Procedure.category.coding[0]"),
]


@pytest.fixture(scope="module")
def closed_validator(tmp_path_factory) -> Validator:
    root = tmp_path_factory.mktemp("closed")
    shipped = Path(__file__).resolve().parents[1] / "profiles"
    for sub in ("valuesets", "base", "structuredefinitions"):
        shutil.copytree(shipped / sub, root / sub)
    for _key, sd_id, element, _ops, _expr in CLOSED:
        path = root / "structuredefinitions" / f"{sd_id}.json"
        sd = json.loads(path.read_text("utf-8"))
        for el in sd["differential"]["element"]:
            if el["id"] == element:
                el["slicing"]["rules"] = "closed"
        path.write_text(json.dumps(sd), "utf-8")
    return Validator(ProfileRegistry(root))


@pytest.mark.parametrize("key,sd_id,element,ops,expr", CLOSED, ids=[c[1] for c in CLOSED])
def test_extra_element_in_closed_slicing_rejected(closed_validator, key, sd_id, element, ops,
                                                  expr):
    resource = mutate(base(key), ops)
    issues = closed_validator.validate(resource)
    found = [(i.code, i.expression) for i in issues if i.severity == "error"]
    assert ("structure", [expr]) in found, found
    # the same instance is fine against the shipped (open) profile
    assert not [i for i in validate(resource) if i.severity == "error" and
                i.expression == [expr]]


def test_extensible_binding_gives_warning_not_error():
    task = base("TPM")
    task["code"] = {"coding": [{"system": "http://example.org/cs", "code": "call-back"}],
                    "text": "Call back"}
    task["description"] = "call"
    issues = validate(task)
    assert not [i for i in issues if i.severity == "error"], [i.to_fhir() for i in issues]
    assert ("warning", ["Task.code"]) in [(i.severity, i.expression) for i in issues]
