"""Referral Task state machine and who may change what (fhir_server.workflow.task_rules)."""

from __future__ import annotations

import copy
import itertools
import json

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import SDOHCC_CODES, STALLED_SYSTEM
from fhir_server.workflow.task_rules import (
    allowed_next,
    check_task_delete,
    check_task_version,
    check_task_write,
    is_referral_task,
)
from tests.reference_data import GRAVITY_EXAMPLES
from tests.workflow_expected import EXPECTED_NEXT, OWNER_MAY_SET, REQUESTER_MAY_SET, STATUSES

EXAMPLES = GRAVITY_EXAMPLES

REQUESTER_ORG = "Organization/clinic"
OWNER_ORG = "Organization/cbo"
PLATFORM_ORG = "Organization/platform"

REQUESTER = AccessContext(organization=REQUESTER_ORG, fhir_user="Practitioner/dr")
OWNER = AccessContext(organization=OWNER_ORG)
THIRD = AccessContext(organization="Organization/other")
PLATFORM = AccessContext(organization=PLATFORM_ORG)

SR = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active", "intent": "order",
      "subject": {"reference": "Patient/p1"}, "requester": {"reference": REQUESTER_ORG}}
PROCEDURE = {"resourceType": "Procedure", "id": "proc1", "status": "completed",
             "basedOn": [{"reference": "ServiceRequest/sr1"}],
             "subject": {"reference": "Patient/p1"}, "performedDateTime": "2026-01-05"}
TARGETS = {"Procedure/proc1": PROCEDURE}


def resulting(value: dict) -> dict:
    """A Task.output of type resulting-activity."""
    return {"type": {"coding": [{"system": SDOHCC_CODES, "code": "resulting-activity"}]}, **value}


def make_task(status: str = "requested", *, requester: str = REQUESTER_ORG,
              owner: str | None = OWNER_ORG, **extra) -> dict:
    """A minimal SDOHCC referral Task."""
    task = {
        "resourceType": "Task", "id": "t1", "meta": {"versionId": "1"},
        "status": status, "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]},
        "focus": {"reference": "ServiceRequest/sr1"}, "for": {"reference": "Patient/p1"},
        "authoredOn": "2026-01-01T10:00:00Z", "requester": {"reference": requester},
    }
    if owner:
        task["owner"] = {"reference": owner}
    task.update(extra)
    return task


def moved(task: dict, status: str, **extra) -> dict:
    """`task` moved to `status`, carrying what that status needs (reason, outcome)."""
    new = copy.deepcopy(task)
    new["status"] = status
    new["statusReason"] = {"text": f"reason for {status}"}
    if status == "completed":
        new["output"] = [resulting({"valueReference": {"reference": "Procedure/proc1"}})]
    new.update(extra)
    return new


def check(prev, new, ctx, sr=SR, targets=TARGETS, **kw):
    return check_task_write(prev, new, ctx, focus_service_request=sr, output_targets=targets,
                            **kw)


def expect(prev, new, ctx, status: int | None, code: str | None = None, **kw) -> FhirError | None:
    if status is None:
        check(prev, new, ctx, **kw)
        return None
    with pytest.raises(FhirError) as info:
        check(prev, new, ctx, **kw)
    assert info.value.status == status, info.value.diagnostics
    if code:
        assert info.value.code == code
    return info.value


def test_table_matches_issue():
    for status in STATUSES:
        assert set(allowed_next(status)) == EXPECTED_NEXT[status]
    assert allowed_next("received") == []


PAIRS = [(a, b) for a, b in itertools.product(STATUSES, STATUSES) if a != b]


def expected_for(old: str, new: str, may_set: set[str]) -> int | None:
    if new not in EXPECTED_NEXT[old]:
        return 422
    return None if new in may_set else 403


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_requester_transitions(old, new):
    err = expect(make_task(old), moved(make_task(old), new), REQUESTER,
                 expected_for(old, new, REQUESTER_MAY_SET))
    if err is not None and err.status == 422:
        assert err.code == "business-rule"
        assert old in err.diagnostics and new in err.diagnostics
        assert err.issues[0].expression == ["Task.status"]


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_owner_transitions(old, new):
    expect(make_task(old), moved(make_task(old), new), OWNER,
           expected_for(old, new, OWNER_MAY_SET))


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_third_party_never_changes(old, new):
    expect(make_task(old), moved(make_task(old), new), THIRD, 403, "forbidden")


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_platform_as_owner_of_source_task(old, new):
    task = make_task(old, owner=PLATFORM_ORG)
    expect(task, moved(task, new), PLATFORM, expected_for(old, new, OWNER_MAY_SET))


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_platform_as_requester_of_sub_task(old, new):
    task = make_task(old, requester=PLATFORM_ORG, partOf=[{"reference": "Task/source"}])
    expect(task, moved(task, new), PLATFORM, expected_for(old, new, REQUESTER_MAY_SET))


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_same_org_requester_and_owner_has_both_rights(old, new):
    task = make_task(old, owner=REQUESTER_ORG)
    expect(task, moved(task, new), REQUESTER,
           expected_for(old, new, REQUESTER_MAY_SET | OWNER_MAY_SET))


def test_invalid_transition_message_lists_allowed_next():
    err = expect(make_task("requested"), moved(make_task("requested"), "completed"), OWNER, 422)
    assert "accepted, cancelled, entered-in-error, rejected" in err.diagnostics


def test_system_context_may_make_any_allowed_transition_but_not_invalid_ones():
    expect(make_task("accepted"), moved(make_task("accepted"), "in-progress"), SYSTEM, None)
    expect(make_task("completed"), moved(make_task("completed"), "in-progress"), SYSTEM, 422)


@pytest.mark.parametrize("status", ["received", "ready"])
def test_received_and_ready_are_refused(status):
    err = expect(make_task("requested"), moved(make_task("requested"), status), OWNER, 422,
                 "code-invalid")
    assert "not allowed for referral Tasks" in err.diagnostics
    assert err.issues[0].expression == ["Task.status"]
    expect(None, make_task(status), REQUESTER, 422, "code-invalid")


def test_unknown_status_code():
    err = expect(make_task("requested"), moved(make_task("requested"), "done"), OWNER, 422,
                 "code-invalid")
    assert err.issues[0].expression == ["Task.status"]


# ------------------------------------------------------------------ create

def test_requester_creates_requested_or_draft():
    expect(None, make_task("requested"), REQUESTER, None)
    expect(None, make_task("draft"), REQUESTER, None)


@pytest.mark.parametrize("status", ["accepted", "in-progress", "completed", "cancelled"])
def test_create_in_later_status_refused(status):
    expect(None, moved(make_task(), status), REQUESTER, 422, "business-rule")


def test_create_by_someone_else_forbidden():
    expect(None, make_task(), OWNER, 403, "forbidden")
    expect(None, make_task(), THIRD, 403, "forbidden")


def test_create_for_practitioner_role_requester_via_party_organizations():
    task = make_task(requester="PractitionerRole/dr-water")
    expect(None, task, REQUESTER, 403)
    expect(None, task, REQUESTER, None,
           party_organizations={"PractitionerRole/dr-water": REQUESTER_ORG})


@pytest.mark.parametrize("sr_status", ["draft", "on-hold", "revoked", "completed",
                                       "entered-in-error"])
def test_requested_task_needs_active_service_request(sr_status):
    err = expect(None, make_task(), REQUESTER, 422, "business-rule",
                 sr={**SR, "status": sr_status})
    assert err.issues[0].expression == ["Task.focus"]


def test_draft_task_may_point_at_draft_service_request_but_not_be_requested_then():
    draft_sr = {**SR, "status": "draft"}
    expect(None, make_task("draft"), REQUESTER, None, sr=draft_sr)
    expect(None, make_task("draft"), REQUESTER, 422, sr={**SR, "status": "revoked"})
    expect(make_task("draft"), moved(make_task("draft"), "requested"), REQUESTER, 422,
           sr=draft_sr)


def test_owner_cannot_accept_when_service_request_revoked():
    expect(make_task(), moved(make_task(), "accepted"), OWNER, 422,
           sr={**SR, "status": "revoked"})


def test_create_needs_resolvable_focus_and_matching_subject():
    expect(None, make_task(), REQUESTER, 422, sr=None)
    err = expect(None, make_task(), REQUESTER, 422, sr={**SR, "subject": {"reference":
                                                                          "Patient/other"}})
    assert err.issues[0].expression == ["Task.for"]


def test_non_referral_tasks_are_ignored():
    patient_task = make_task(
        "ready", meta={"profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                                   "SDOHCC-TaskForPatient"]})
    assert not is_referral_task(patient_task)
    check(None, patient_task, THIRD)


def test_official_examples_are_referral_tasks():
    for name in ("Task-SDOHCC-TaskReferralManagementOrderFulfillmentCompletedExample.json",
                 "Task-SDOHCC-TaskReferralManagementOrderSubtaskAcceptedExample.json"):
        assert is_referral_task(json.loads((EXAMPLES / name).read_text()))
    patient = json.loads((EXAMPLES / "Task-SDOHCC-TaskPatientMakeAppointmentCompletedExample.json")
                         .read_text())
    assert not is_referral_task(patient)


# ------------------------------------------------------------------ field-level rules

@pytest.mark.parametrize("field", ["focus", "for", "priority", "input", "owner", "note",
                                   "description", "requester", "businessStatus"])
def test_owner_may_change_only_status_reason_output(field):
    prev = make_task("accepted", priority="routine")
    new = copy.deepcopy(prev)
    new[field] = {"reference": "Patient/other"} if field not in ("priority",) else "urgent"
    err = expect(prev, new, OWNER, 403, "forbidden")
    assert err.issues[0].expression == [f"Task.{field}"]


def test_owner_status_reason_and_output_change_allowed():
    prev = make_task("in-progress")
    new = moved(prev, "in-progress")  # statusReason changed, same status
    new["output"] = [resulting({"valueCodeableConcept": {"coding": [
        {"system": "http://snomed.info/sct", "code": "710925007"}]}})]
    new["lastModified"] = "2026-01-03T00:00:00Z"
    new["meta"] = {"versionId": "2"}
    expect(prev, new, OWNER, None)


def test_owner_edit_of_focus_reported_with_every_field():
    prev = make_task("accepted")
    new = moved(prev, "in-progress", focus={"reference": "ServiceRequest/x"},
                **{"for": {"reference": "Patient/x"}})
    err = expect(prev, new, OWNER, 403)
    assert {tuple(i.expression) for i in err.issues} == {("Task.focus",), ("Task.for",)}


def test_stalled_mark_does_not_count_as_owner_change():
    prev = make_task("requested", businessStatus={"coding": [
        {"system": STALLED_SYSTEM, "code": "stalled-not-accepted"}],
        "text": "Stalled: not accepted in time"})
    new = moved(prev, "accepted")
    del new["businessStatus"]
    expect(prev, new, OWNER, None)


def test_requester_may_change_details_but_not_fixed_fields_after_draft():
    prev = make_task("requested")
    expect(prev, {**prev, "priority": "urgent", "note": [{"text": "call first"}]},
           REQUESTER, None)
    expect(prev, {**prev, "owner": {"reference": "Organization/other"}}, REQUESTER, None)
    err = expect(prev, {**prev, "focus": {"reference": "ServiceRequest/other"}}, REQUESTER,
                 422, "business-rule")
    assert err.issues[0].expression == ["Task.focus"]
    draft = make_task("draft")
    expect(draft, {**draft, "for": {"reference": "Patient/p1"},
                   "focus": {"reference": "ServiceRequest/sr1"}}, REQUESTER, None)


def test_requester_cannot_reassign_owner_after_acceptance():
    prev = make_task("accepted")
    err = expect(prev, {**prev, "owner": {"reference": "Organization/other"}}, REQUESTER, 422)
    assert "$redirect" in err.diagnostics


def test_terminal_task_is_frozen_except_entered_in_error():
    prev = moved(make_task("completed"), "completed")
    expect(prev, {**prev, "note": [{"text": "late"}]}, REQUESTER, 422, "business-rule")
    expect(prev, {**prev, "output": []}, OWNER, 422)
    expect(prev, moved(prev, "entered-in-error"), REQUESTER, None)


def test_open_task_can_be_claimed_by_accepting():
    prev = make_task("requested", owner=None)
    claim = moved(prev, "accepted", owner={"reference": OWNER_ORG})
    expect(prev, claim, OWNER, None)
    expect(prev, {**claim, "priority": "stat"}, OWNER, 403)
    expect(prev, moved(prev, "rejected", owner={"reference": OWNER_ORG}), OWNER, 403)


# ------------------------------------------------------------------ statusReason

@pytest.mark.parametrize(("old", "new", "ctx"), [
    ("requested", "rejected", OWNER), ("requested", "cancelled", REQUESTER),
    ("accepted", "on-hold", OWNER), ("in-progress", "failed", OWNER),
    ("accepted", "cancelled", OWNER)])
def test_status_reason_text_required(old, new, ctx):
    prev = make_task(old)
    new_task = moved(prev, new)
    new_task["statusReason"] = {"coding": [{"code": "x"}]}
    err = expect(prev, new_task, ctx, 422, "business-rule")
    assert err.issues[0].expression == ["Task.statusReason.text"]
    new_task["statusReason"] = {"text": "   "}
    expect(prev, new_task, ctx, 422)


def test_removing_reason_while_on_hold_refused():
    prev = moved(make_task("on-hold"), "on-hold")
    expect(prev, {k: v for k, v in prev.items() if k != "statusReason"}, OWNER, 422)


# ------------------------------------------------------------------ completion outcome

def complete_with(outputs: list, targets=TARGETS, sr=SR):
    prev = make_task("in-progress")
    new = moved(prev, "completed")
    new["output"] = outputs
    return prev, new, targets, sr


def test_completion_without_output_refused():
    prev, new, targets, sr = complete_with([])
    err = expect(prev, new, OWNER, 422, "business-rule", targets=targets)
    assert err.issues[0].expression == ["Task.output"]


def test_completion_with_procedure_based_on_focus():
    prev, new, targets, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/proc1"}})])
    expect(prev, new, OWNER, None, targets=targets)


def test_completion_with_absolute_focus_reference():
    prev, new, targets, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/proc1"}})])
    proc = {**PROCEDURE, "basedOn": [{"reference": "ServiceRequest/sr1/_history/3"}]}
    expect(prev, new, OWNER, None, targets={"Procedure/proc1": proc})


def test_completion_with_procedure_for_other_request_refused():
    other = {**PROCEDURE, "basedOn": [{"reference": "ServiceRequest/other"}]}
    prev, new, _, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/proc1"}})])
    err = expect(prev, new, OWNER, 422, targets={"Procedure/proc1": other})
    assert err.issues[0].expression == ["Task.output[0].valueReference"]


def test_completion_with_platform_filler_order_procedure():
    platform_sr = {"resourceType": "ServiceRequest", "id": "cp-sr", "status": "active",
                   "intent": "filler-order", "basedOn": [{"reference": "ServiceRequest/sr1"}]}
    proc = {**PROCEDURE, "basedOn": [{"reference": "ServiceRequest/cp-sr"}]}
    prev, new, _, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/proc1"}})])
    expect(prev, new, OWNER, 422, targets={"Procedure/proc1": proc})
    expect(prev, new, OWNER, None,
           targets={"Procedure/proc1": proc, "ServiceRequest/cp-sr": platform_sr})


def test_completion_with_unresolved_or_wrong_type_reference_refused():
    prev, new, _, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/missing"}})])
    assert expect(prev, new, OWNER, 422).code == "not-found"
    prev, new, _, _ = complete_with(
        [resulting({"valueReference": {"reference": "Observation/o1"}})])
    expect(prev, new, OWNER, 422, "business-rule")


def test_completion_with_not_done_procedure_refused_and_in_progress_not_enough():
    prev, new, _, _ = complete_with(
        [resulting({"valueReference": {"reference": "Procedure/proc1"}})])
    expect(prev, new, OWNER, 422, targets={"Procedure/proc1": {**PROCEDURE,
                                                               "status": "not-done"}})
    expect(prev, new, OWNER, 422, targets={"Procedure/proc1": {**PROCEDURE,
                                                               "status": "in-progress"}})


def test_completion_with_procedure_code():
    code = {"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                                                 "code": "710925007"}]}}
    prev, new, _, _ = complete_with([resulting(code)])
    expect(prev, new, OWNER, None)
    bad = {"valueCodeableConcept": {"text": "helped"}}
    prev, new, _, _ = complete_with([resulting(bad)])
    expect(prev, new, OWNER, 422)


def test_completion_with_additional_content():
    obs = {"resourceType": "Observation", "id": "enr", "status": "final"}
    output = {"type": {"coding": [{"system": SDOHCC_CODES, "code": "additional-content"}]},
              "valueReference": {"reference": "Observation/enr"}}
    prev, new, _, _ = complete_with([output])
    expect(prev, new, OWNER, None, targets={"Observation/enr": obs})
    output["valueReference"] = {"reference": "Patient/p1"}
    expect(prev, new, OWNER, 422, targets={"Patient/p1": {"resourceType": "Patient"}})


def test_unprofiled_outputs_alone_do_not_complete():
    other = {"type": {"text": "note"}, "valueString": "done"}
    prev, new, _, _ = complete_with([other])
    expect(prev, new, OWNER, 422)


def test_gravity_completed_example_passes_with_its_procedure():
    task = json.loads((EXAMPLES / "Task-SDOHCC-TaskReferralManagementOrderFulfillmentCompleted"
                                  "Example.json").read_text())
    proc = json.loads((EXAMPLES / "Procedure-SDOHCC-ProcedureFoodPantryApplicationAssistance"
                                  "Example.json").read_text())
    prev = {**task, "status": "in-progress"}
    prev.pop("output")
    owner = AccessContext(organization=task["owner"]["reference"])
    ref = task["output"][0]["valueReference"]["reference"]
    check_task_write(prev, task, owner, focus_service_request=None,
                     output_targets={ref: proc})


# ------------------------------------------------------------------ If-Match

def test_version_aware_updates():
    check_task_version("3", 'W/"3"')
    check_task_version("3", '"3"')
    check_task_version("3", None, required=False)
    with pytest.raises(FhirError) as info:
        check_task_version("3", None)
    assert info.value.status == 428
    with pytest.raises(FhirError) as info:
        check_task_version("3", 'W/"2"')
    assert info.value.status == 412
    assert "current version is 3" in info.value.diagnostics


def test_only_draft_tasks_are_deleted_by_their_requester():
    check_task_delete(make_task("draft"), REQUESTER)
    with pytest.raises(FhirError) as info:
        check_task_delete(make_task("draft"), OWNER)
    assert info.value.status == 403
    with pytest.raises(FhirError) as info:
        check_task_delete(make_task("requested"), REQUESTER)
    assert info.value.status == 422 and "entered-in-error" in info.value.diagnostics
    with pytest.raises(FhirError):
        check_task_delete(make_task("completed"), SYSTEM)
    check_task_delete({"resourceType": "Task", "status": "completed"}, OWNER)  # not a referral


def test_delete_rules_name_code_and_expression():
    role = "PractitionerRole/dr-at-clinic"
    draft = make_task("draft", requester=role)
    check_task_delete(draft, REQUESTER, party_organizations={role: REQUESTER_ORG})
    with pytest.raises(FhirError) as info:
        check_task_delete(draft, REQUESTER)  # the role is not known to be the clinic's
    assert (info.value.status, info.value.code, info.value.issues[0].expression) == (
        403, "forbidden", ["Task"])
    with pytest.raises(FhirError) as info:
        check_task_delete(make_task("requested"), REQUESTER)
    assert (info.value.status, info.value.code, info.value.issues[0].expression) == (
        422, "business-rule", ["Task.status"])


def test_version_errors_carry_their_codes():
    with pytest.raises(FhirError) as info:
        check_task_version("3", None)
    assert (info.value.status, info.value.code) == (428, "required")
    with pytest.raises(FhirError) as info:
        check_task_version("3", 'W/"2"')
    assert (info.value.status, info.value.code) == (412, "conflict")
    check_task_version(None, 'W/"2"')  # nothing stored to compare with


def test_status_role_refusal_says_who_may_set_what():
    err = expect(make_task("requested"), moved(make_task("requested"), "accepted"), REQUESTER,
                 403, "forbidden")
    assert err.diagnostics == ("The Task requester may not set status accepted; the requester "
                               "may set: cancelled, entered-in-error, requested")
    assert err.issues[0].expression == ["Task.status"]
    err = expect(make_task("requested"), moved(make_task("requested"), "entered-in-error"),
                 OWNER, 403, "forbidden")
    assert err.diagnostics == (
        "The Task owner may not set status entered-in-error; the owner may set: accepted, "
        "cancelled, completed, failed, in-progress, on-hold, rejected")


def test_owner_swap_message_names_the_status():
    prev = make_task("in-progress")
    err = expect(prev, {**prev, "owner": {"reference": "Organization/other"}}, REQUESTER, 422,
                 "business-rule")
    assert err.diagnostics == ("Task.owner cannot change once the Task is in-progress; cancel it "
                               "or use $redirect while it is requested")
    assert err.issues[0].expression == ["Task.owner"]


def test_stalled_mark_is_ignored_but_other_business_status_counts():
    other = {"system": "http://example.org/cbo-status", "code": "waitlisted"}
    stalled = {"system": STALLED_SYSTEM, "code": "stalled-not-accepted"}
    prev = make_task("accepted", businessStatus={"coding": [stalled, other]})
    changed = {**prev, "businessStatus": {"coding": [stalled, {**other, "code": "seen"}]}}
    err = expect(prev, changed, OWNER, 403, "forbidden")
    assert err.issues[0].expression == ["Task.businessStatus"]
    expect(prev, {**prev, "businessStatus": {"coding": [other]}}, OWNER, None)
    texted = make_task("accepted", businessStatus={"coding": [other], "text": "Waitlisted"})
    retexted = {**texted, "businessStatus": {"coding": [other], "text": "On the list"}}
    assert expect(texted, retexted, OWNER, 403).issues[0].expression == ["Task.businessStatus"]
    only_text = make_task("accepted", businessStatus={"text": "Waiting"})
    assert expect(only_text, {**only_text, "businessStatus": {"text": "Seen"}}, OWNER,
                  403).issues[0].expression == ["Task.businessStatus"]


def test_output_edit_while_service_request_on_hold_is_not_a_start():
    on_hold_sr = {**SR, "status": "on-hold"}
    prev = make_task("in-progress")
    new = {**prev, "output": [resulting({"valueReference": {"reference": "Procedure/proc1"}})]}
    expect(prev, new, OWNER, None, sr=on_hold_sr)
    err = expect(make_task("accepted"), moved(make_task("accepted"), "in-progress"), OWNER,
                 422, "business-rule", sr=on_hold_sr)
    assert err.issues[0].expression == ["Task.focus"]


def test_create_without_requester_and_unknown_status_messages():
    body = make_task("requested")
    del body["requester"]
    err = expect(None, body, OWNER, 403, "forbidden")
    assert err.diagnostics == "Only the requester (none given) may create this referral Task"
    assert err.issues[0].expression == ["Task.requester"]
    err = expect(None, make_task("bogus"), REQUESTER, 422, "code-invalid")
    assert err.issues[0].expression == ["Task.status"]


def test_open_task_claimed_through_a_service_of_the_organization():
    prev = make_task("requested", owner=None)
    claim = moved(prev, "accepted", owner={"reference": "HealthcareService/hs1"})
    services = {"HealthcareService/hs1": OWNER_ORG}
    expect(prev, claim, OWNER, None, party_organizations=services)
    expect(prev, claim, OWNER, 403, "forbidden")


def test_draft_cannot_be_pointed_at_another_patient_than_the_service_request():
    draft = make_task("draft")
    err = expect(draft, {**draft, "for": {"reference": "Patient/p2"}}, REQUESTER, 422,
                 "business-rule")
    assert err.issues[0].expression == ["Task.for"]
    assert err.diagnostics == ("Task.for (Patient/p2) must be the focus ServiceRequest's "
                               "subject (Patient/p1)")
    expect(draft, {**draft, "for": {"reference": "http://x/fhir/Patient/p1"}}, REQUESTER,
           422, "business-rule")
    expect(draft, {**draft, "for": {"reference": "Patient/p1/_history/3"}}, REQUESTER, None)
