"""Coordination-platform mode: routing, reflecting sub-Task progress, cancellation both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import SDOHCC_CODES
from fhir_server.workflow.platform import (
    is_platform_subtask,
    plan_platform_acceptance,
    propagate_source_cancellation,
    reflect_subtask_change,
)
from fhir_server.workflow.task_rules import check_task_write
from tests.test_workflow_task_rules import PLATFORM, PLATFORM_ORG, REQUESTER, SR, make_task

NOW = datetime(2026, 4, 1, 8, 0, tzinfo=UTC)
CBO = {"resourceType": "Organization", "id": "cbo", "active": True}
RECIPIENT = AccessContext(organization="Organization/cbo")


def source() -> dict:
    return make_task("requested", owner=PLATFORM_ORG, id="src", priority="urgent",
                     input=[{"type": {"coding": [{"system": SDOHCC_CODES,
                                                  "code": "additional-content"}]},
                             "valueReference": {"reference": "QuestionnaireResponse/phq9"}}])


def accept():
    return plan_platform_acceptance(source(), SR, PLATFORM, platform_org=PLATFORM_ORG,
                                    recipient_ref="Organization/cbo", recipient=CBO, now=NOW,
                                    sr_id="cp-sr", sub_task_id="sub")


def test_acceptance_creates_filler_order_and_sub_task():
    plan = accept()
    assert plan.source_task["status"] == "accepted"
    sr = plan.service_request
    assert sr["intent"] == "filler-order" and sr["status"] == "active"
    assert sr["basedOn"] == [{"reference": "ServiceRequest/sr1"}]
    assert sr["requester"] == {"reference": PLATFORM_ORG}
    assert sr["performer"] == [{"reference": "Organization/cbo"}]
    assert sr["subject"] == SR["subject"]
    sub = plan.sub_task
    assert sub["partOf"] == [{"reference": "Task/src"}]
    assert sub["focus"] == {"reference": "ServiceRequest/cp-sr"}
    assert sub["owner"] == {"reference": "Organization/cbo"}
    assert sub["requester"] == {"reference": PLATFORM_ORG}
    assert sub["status"] == "requested" and sub["priority"] == "urgent"
    assert sub["input"] == source()["input"]
    assert is_platform_subtask(sub, PLATFORM_ORG)
    # every planned write passes the task rules for the platform
    check_task_write(source(), plan.source_task, PLATFORM, focus_service_request=SR,
                     output_targets={})
    check_task_write(None, sub, PLATFORM, focus_service_request=sr, output_targets={})


def test_acceptance_refusals():
    with pytest.raises(FhirError) as info:
        plan_platform_acceptance(source(), SR, REQUESTER, platform_org=PLATFORM_ORG,
                                 recipient_ref="Organization/cbo", recipient=CBO, now=NOW)
    assert info.value.status == 403
    with pytest.raises(FhirError) as info:
        plan_platform_acceptance(source(), SR, PLATFORM, platform_org=PLATFORM_ORG,
                                 recipient_ref="Organization/zz", recipient=None, now=NOW)
    assert info.value.code == "not-found"
    with pytest.raises(FhirError) as info:
        plan_platform_acceptance(source(), {**SR, "status": "revoked"}, PLATFORM,
                                 platform_org=PLATFORM_ORG, recipient_ref="Organization/cbo",
                                 recipient=CBO, now=NOW)
    assert info.value.status == 422
    owned_elsewhere = make_task("requested", owner="Organization/cbo")
    with pytest.raises(FhirError):
        plan_platform_acceptance(owned_elsewhere, SR, SYSTEM, platform_org=PLATFORM_ORG,
                                 recipient_ref="Organization/cbo", recipient=CBO, now=NOW)


def test_sub_task_progress_is_reflected_onto_source():
    plan = accept()
    src, sub = plan.source_task, plan.sub_task
    accepted_sub = {**sub, "status": "accepted"}
    check_task_write(sub, accepted_sub, RECIPIENT, focus_service_request=plan.service_request,
                     output_targets={})
    src2 = reflect_subtask_change(sub, accepted_sub, src, now=NOW)
    assert src2["status"] == "in-progress"
    check_task_write(src, src2, PLATFORM, focus_service_request=SR, output_targets={})
    in_progress = {**accepted_sub, "status": "in-progress"}
    assert reflect_subtask_change(accepted_sub, in_progress, src2, now=NOW) is None
    procedure = {"resourceType": "Procedure", "id": "p9", "status": "completed",
                 "basedOn": [{"reference": "ServiceRequest/cp-sr"}]}
    done_sub = {**in_progress, "status": "completed", "output": [
        {"type": {"coding": [{"system": SDOHCC_CODES, "code": "resulting-activity"}]},
         "valueReference": {"reference": "Procedure/p9"}}]}
    src3 = reflect_subtask_change(in_progress, done_sub, src2, now=NOW, procedures=[procedure])
    assert src3["status"] == "completed"
    assert [o["valueReference"]["reference"] for o in src3["output"]] == ["Procedure/p9"]
    check_task_write(src2, src3, PLATFORM, focus_service_request=SR,
                     output_targets={"Procedure/p9": procedure,
                                     "ServiceRequest/cp-sr": plan.service_request})


def test_on_hold_failed_and_rejected_sub_task():
    plan = accept()
    src = {**plan.source_task, "status": "in-progress"}
    sub = {**plan.sub_task, "status": "in-progress"}
    held = reflect_subtask_change(sub, {**sub, "status": "on-hold",
                                        "statusReason": {"text": "client travelling"}},
                                  src, now=NOW)
    assert held["status"] == "on-hold"
    assert held["statusReason"] == {"text": "client travelling"}
    failed = reflect_subtask_change(sub, {**sub, "status": "failed"}, src, now=NOW)
    assert failed["status"] == "failed" and failed["statusReason"]["text"]
    assert reflect_subtask_change(plan.sub_task, {**plan.sub_task, "status": "rejected"},
                                  plan.source_task, now=NOW) is None


def test_cancellation_propagates_both_ways():
    plan = accept()
    src = plan.source_task
    sub = {**plan.sub_task, "status": "accepted"}
    cancelled_sub = {**sub, "status": "cancelled",
                     "statusReason": {"text": "Client moved away"}}
    src_cancel = reflect_subtask_change(sub, cancelled_sub, src, now=NOW)
    assert src_cancel["status"] == "cancelled"
    assert src_cancel["statusReason"] == {"text": "Client moved away"}
    # source cancelled by the requester: sub-Task cancelled, platform SR revoked
    src_by_requester = {**src, "status": "cancelled",
                        "statusReason": {"text": "Patient declined"}}
    check_task_write(src, src_by_requester, REQUESTER, focus_service_request=SR,
                     output_targets={})
    other_sub = {**sub, "id": "unrelated", "partOf": [{"reference": "Task/else"}]}
    changed = propagate_source_cancellation(src, src_by_requester, [sub, other_sub],
                                            [plan.service_request], now=NOW)
    assert [(r["resourceType"], r["status"]) for r in changed] == [
        ("Task", "cancelled"), ("ServiceRequest", "revoked")]
    assert changed[0]["statusReason"] == {"text": "Patient declined"}
    check_task_write(sub, changed[0], PLATFORM, focus_service_request=plan.service_request,
                     output_targets={})
    assert propagate_source_cancellation(src_by_requester, src_by_requester, [sub],
                                         now=NOW) == []
