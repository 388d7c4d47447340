"""The 58 official Gravity SDOHCC 2.3.0 examples validate against the shipped 3.0.0 profiles.

One rule changed in 3.0.0 and is tested for its 3.0.0 behaviour: SDOHCC Group
``characteristic[HasSDOHCondition].value[x]`` is a CodeableConcept (FHIR-52375); in 2.3.0 it was
a Reference to the SDOH Category ValueSet, so the 2.3.0 Group example is rejected at exactly that
element and its 3.0.0 rewrite is accepted.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_server.errors import FhirError
from profiles.base_r4 import validate_base
from profiles.loader import registry
from profiles.policy import SERVICE_REQUEST, TASK_FOR_REFERRAL, required_profiles
from profiles.validator import validate
from tests.reference_data import BACKPORT_SAMPLES, GRAVITY_EXAMPLES

EXAMPLES = GRAVITY_EXAMPLES
FILES = sorted(EXAMPLES.glob("*.json"))
SDOH = "http://hl7.org/fhir/us/sdoh-clinicalcare/"
GROUP = "Group-SDOHCC-GroupSDOHPatientsForPayerExample.json"
# Every profile the examples claim is shipped (SDOHCC personal characteristics from the
# 3.0.0 FSH, their US Core parent, SDC extr-smap essentials).
NOT_SHIPPED: set[str] = set()


def load(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text("utf-8"))


def errors(issues):
    return [i for i in issues if i.severity in ("error", "fatal")]


def test_there_are_58_examples():
    assert len(FILES) == 58


@pytest.mark.parametrize("path", [f for f in FILES if f.name != GROUP], ids=lambda p: p.stem)
def test_example_validates_without_errors(path: Path):
    resource = json.loads(path.read_text("utf-8"))
    issues = validate(resource)
    assert errors(issues + validate_base(resource)) == [], [i.to_fhir() for i in issues]
    claimed = (resource.get("meta") or {}).get("profile") or []
    for url in claimed:
        if url in NOT_SHIPPED:  # unknown claimed profile: a warning, never an error
            assert any(i.severity == "warning" and i.code == "not-supported" for i in issues)
        else:
            assert registry().get(url) is not None, url


def test_examples_are_really_checked_against_their_profiles():
    """Guard against a validator that accepts everything: every shipped profile an example
    claims must reject the example once its first required element is removed."""
    checked = 0
    for path in FILES:
        resource = json.loads(path.read_text("utf-8"))
        for url in (resource.get("meta") or {}).get("profile") or []:
            sd = registry().get(url)
            if sd is None:
                continue
            broken = copy.deepcopy(resource)
            broken.pop("subject", None)
            broken.pop("patient", None)
            broken.pop("name", None)
            broken.pop("code", None)
            broken.pop("questionnaire", None)
            broken.pop("_questionnaire", None)
            broken.pop("address", None)
            broken.pop("practitioner", None)
            broken.pop("telecom", None)
            broken.pop("characteristic", None)
            if errors(validate(broken)):
                checked += 1
    assert checked == 53  # 45 before the personal-characteristic profiles were shipped


def test_group_2_3_0_value_reference_rejected_in_3_0_0():
    issues = errors(validate(load(GROUP)))
    assert [i.expression for i in issues] == [["Group.characteristic[0].value.ofType(Reference)"]]


def test_group_rewritten_for_3_0_0_is_valid():
    group = load(GROUP)
    group["characteristic"][0].pop("valueReference")
    group["characteristic"][0]["valueCodeableConcept"] = {"coding": [{
        "system": SDOH + "CodeSystem/SDOHCC-CodeSystemTemporaryCodes", "code": "food-insecurity"}]}
    assert errors(validate(group)) == []


def test_backport_subscription_sample_is_valid():
    sub = json.loads((BACKPORT_SAMPLES /
                      "Subscription_id-only.json").read_text("utf-8"))
    assert errors(validate(sub)) == []
    del sub["_payload" if "_payload" in sub else "channel"]["_payload"]
    issues = errors(validate(sub))
    assert any("Subscription.channel.payload.extension" in i.expression for i in issues)


def test_explicit_profile_parameter():
    sr = load("ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample.json")
    sr.pop("meta")
    assert errors(validate(sr)) == []  # claims nothing, nothing to check
    del sr["subject"]
    issues = errors(validate(sr, profiles=[SERVICE_REQUEST]))
    assert ["ServiceRequest.subject"] in [i.expression for i in issues]


def test_unknown_profile_parameter_is_a_400():
    with pytest.raises(FhirError) as exc:
        validate({"resourceType": "Task"}, profiles=["http://example.org/StructureDefinition/x"])
    assert exc.value.status == 400
    assert "not known" in exc.value.diagnostics


def test_unknown_claimed_profile_warning_or_strict_error():
    task = load("Task-SDOHCC-TaskReferralManagementOrderFulfillmentAcceptedExample.json")
    task["meta"]["profile"].append("http://example.org/StructureDefinition/other|1.0")
    issues = validate(task)
    assert [(i.severity, i.expression) for i in issues] == [
        ("warning", ["Task.meta.profile[1]"])]
    strict = validate(task, strict_unknown_profile=True)
    assert [(i.severity, i.code) for i in strict] == [("error", "not-supported")]


def test_versioned_profile_claim_is_understood():
    task = load("Task-SDOHCC-TaskReferralManagementOrderFulfillmentAcceptedExample.json")
    task["meta"]["profile"] = [TASK_FOR_REFERRAL + "|3.0.0"]
    del task["focus"]
    assert [i.expression for i in errors(validate(task))] == [["Task.focus"]]


def test_profile_for_other_type_is_rejected():
    sr = load("ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample.json")
    issues = errors(validate(sr, profiles=[TASK_FOR_REFERRAL]))
    assert issues and issues[0].code == "structure"


def test_must_support_reported_on_request():
    task = load("Task-SDOHCC-TaskReferralManagementOrderFulfillmentCompletedExample.json")
    assert not [i for i in validate(task) if i.severity == "information"]
    info = [i for i in validate(task, must_support=True) if i.severity == "information"]
    assert ["Task.priority"] in [i.expression for i in info]
    assert all(i.code == "informational" for i in info)


@pytest.mark.parametrize("weird", [
    None, 42, "Task", [], {}, {"resourceType": 5},
    {"resourceType": "Task", "meta": {"profile": [TASK_FOR_REFERRAL]}, "code": "fulfill",
     "focus": [1, 2], "for": "x", "input": {"a": 1}, "output": [None, 3, {"type": []}],
     "statusReason": [], "status": 7, "intent": None},
    {"resourceType": "ServiceRequest", "meta": {"profile": [SERVICE_REQUEST, 3]},
     "category": "x", "subject": {"reference": 12}, "extension": [None, {"url": 1}],
     "basedOn": {"reference": "ServiceRequest/1"}, "orderDetail": [{"coding": "x"}]},
    {"resourceType": "Observation", "meta": {"profile": [
        SDOH + "StructureDefinition/SDOHCC-ObservationScreeningResponse"]},
     "category": [{"coding": None}], "valueQuantity": "12", "_status": {"extension": 3}},
])
def test_weird_input_never_crashes(weird):
    issues = validate(weird)
    assert isinstance(issues, list)
    assert not [i for i in issues if i.code == "exception"], [i.to_fhir() for i in issues]


def test_policy_requires_sdohcc_profiles_for_referrals():
    task = load("Task-SDOHCC-TaskReferralManagementOrderFulfillmentAcceptedExample.json")
    assert required_profiles(task) == [TASK_FOR_REFERRAL]
    patient_task = load("Task-SDOHCC-TaskPatientMakeAppointmentCompletedExample.json")
    assert required_profiles(patient_task) == []
    sr = load("ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample.json")
    assert required_profiles(sr) == [SERVICE_REQUEST]
    assert required_profiles({"resourceType": "Patient"}) == []
    custom = {"Patient": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"]}
    assert required_profiles({"resourceType": "Patient"}, custom) == custom["Patient"]
    assert required_profiles(sr, custom) == []


def test_registry_lookups():
    reg = registry()
    assert reg.get(TASK_FOR_REFERRAL)["type"] == "Task"
    assert reg.get(TASK_FOR_REFERRAL + "|3.0.0") is not None
    urls = {sd["url"] for sd in reg.all_profiles()}
    assert SERVICE_REQUEST in urls and len(urls) >= 20
    vs = SDOH + "ValueSet/SDOHCC-ValueSetReferralTaskStatus"
    assert reg.valueset(vs)["id"] == "SDOHCC-ValueSetReferralTaskStatus"
    assert reg.code_in_valueset("http://hl7.org/fhir/task-status", "accepted", vs) is True
    assert reg.code_in_valueset("http://hl7.org/fhir/task-status", "ready", vs) is False
    assert reg.code_in_valueset("http://hl7.org/fhir/task-status", "received", vs) is False
    assert reg.code_in_valueset(None, "requested", vs) is True
    proc = "http://hl7.org/fhir/us/core/ValueSet/us-core-procedure-code"
    assert reg.code_in_valueset("http://snomed.info/sct", "1234", proc) is None  # SNOMED filter
    assert reg.code_in_valueset("http://www.ama-assn.org/go/cpt", "99213", proc) is True
    assert reg.code_in_valueset("http://example.org", "x", proc) is False
    assert reg.code_in_valueset("http://x", "y", "http://example.org/ValueSet/none") is None
