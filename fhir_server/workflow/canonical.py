"""Canonical URLs of the artifacts (CodeSystem, extensions, operations) this server publishes."""

from __future__ import annotations

CANONICAL_BASE = "http://mh-referral.example.org/fhir"
"""Base of every canonical URL we mint. Change in one place if the project gets a domain."""

STALLED_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/referral-business-status"
"""CodeSystem of the stalled-referral marks carried in Task.businessStatus."""

EXT_REDIRECTED_TO = f"{CANONICAL_BASE}/StructureDefinition/task-redirected-to"
"""On a rejected Task: Reference(Task) to the Task that $redirect created to replace it."""

EXT_REPLACES = "http://hl7.org/fhir/StructureDefinition/task-replaces"
"""Core R4 extension on the new Task: Reference(Task) to the Task it replaces."""

EXT_MODIFIED_BY = f"{CANONICAL_BASE}/StructureDefinition/modified-by"
"""In meta.extension of a stored version: who made that version (valueReference)."""

SDOHCC_CODES = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)
TASK_CODE_SYSTEM = "http://hl7.org/fhir/CodeSystem/task-code"
REFERRAL_TASK_PROFILE = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForReferralManagement"
)
PATIENT_TASK_PROFILE = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-TaskForPatient"
)

EXT_CANDIDATE = f"{CANONICAL_BASE}/StructureDefinition/task-candidate"
"""On an open referral Task (no owner): Reference(Organization | HealthcareService) to one
organization that may claim it (repeats; see RULES.md §10)."""

EXT_CANDIDATE_DECLINED = f"{CANONICAL_BASE}/StructureDefinition/task-candidate-declined"
"""On an open referral Task: a candidate that declined it (sub-extensions `candidate`,
`reason`)."""

STATUS_REASON_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/referral-status-reason"
"""Coded reasons for declining, holding and failing a referral (Task.statusReason.coding)."""
