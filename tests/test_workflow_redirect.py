"""$redirect: reject the current Task and create the next, linked both ways."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import EXT_REDIRECTED_TO, EXT_REPLACES
from fhir_server.workflow.redirect import parse_redirect_parameters, plan_redirect, redirect_links
from fhir_server.workflow.task_rules import check_task_write
from tests.test_workflow_task_rules import OWNER, OWNER_ORG, REQUESTER, SR, make_task

NOW = datetime(2026, 2, 3, 14, 0, tzinfo=UTC)
ORG_B = {"resourceType": "Organization", "id": "b", "name": "Second CBO", "active": True}
HS_C = {"resourceType": "HealthcareService", "id": "c", "name": "Counselling"}


def test_redirect_twice_builds_a_visible_chain():
    first = make_task(priority="urgent", input=[{"type": {"text": "x"}, "valueString": "y"}],
                      groupIdentifier={"value": "ref-1"})
    rejected_a, task_b = plan_redirect(first, "Organization/b", "No capacity", OWNER,
                                       now=NOW, target=ORG_B, new_id="t2")
    assert rejected_a["status"] == "rejected"
    assert rejected_a["statusReason"] == {"text": "No capacity"}
    assert task_b["id"] == "t2" and task_b["status"] == "requested"
    assert task_b["owner"] == {"reference": "Organization/b", "display": "Second CBO"}
    for key in ("focus", "for", "requester", "priority", "input", "groupIdentifier", "code"):
        assert task_b[key] == first[key]
    assert "output" not in task_b and "statusReason" not in task_b
    assert redirect_links(rejected_a) == {"replaces": None, "redirectedTo": "Task/t2"}
    assert redirect_links(task_b) == {"replaces": "Task/t1", "redirectedTo": None}
    # the rejection itself obeys the task rules (owner, requested -> rejected with reason)
    without_link = {k: v for k, v in rejected_a.items() if k != "extension"}
    check_task_write(first, without_link, OWNER, focus_service_request=SR, output_targets={})
    # the new owner redirects again
    owner_b = AccessContext(organization="Organization/b")
    rejected_b, task_c = plan_redirect(task_b, "HealthcareService/c", "Out of area", owner_b,
                                       now=NOW, target=HS_C, new_id="t3")
    assert redirect_links(rejected_b) == {"replaces": "Task/t1", "redirectedTo": "Task/t3"}
    assert redirect_links(task_c) == {"replaces": "Task/t2", "redirectedTo": None}
    assert [e["url"] for e in task_c["extension"]] == [EXT_REPLACES]
    assert [e["url"] for e in rejected_b["extension"]] == [EXT_REPLACES, EXT_REDIRECTED_TO]
    # the new Task is a valid create for its requester
    check_task_write(None, task_c, REQUESTER, focus_service_request=SR, output_targets={})


def expect_error(task, target_ref, target, ctx=OWNER, reason="why") -> FhirError:
    with pytest.raises(FhirError) as info:
        plan_redirect(task, target_ref, reason, ctx, now=NOW, target=target)
    return info.value


def test_redirect_refusals():
    task = make_task()
    assert expect_error(task, "Organization/zz", None).code == "not-found"
    assert expect_error(task, "Patient/p1", {"resourceType": "Patient"}).status == 422
    assert expect_error(task, OWNER_ORG, {"resourceType": "Organization", "id": "cbo"}
                        ).status == 422
    assert expect_error(task, "Organization/b", {**ORG_B, "active": False}).status == 422
    assert expect_error(task, "Organization/b", ORG_B, ctx=REQUESTER).status == 403
    assert expect_error(make_task("accepted"), "Organization/b", ORG_B).status == 422
    assert expect_error(task, "Organization/b", ORG_B, reason=" ").status == 400
    rejected, new = plan_redirect(task, "Organization/b", "x", SYSTEM, now=NOW, target=ORG_B)
    assert new["id"] and new["id"] != task["id"]


def test_parse_parameters():
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "target", "valueReference": {"reference": "Organization/b"}},
        {"name": "reason", "valueString": " full "}]}
    assert parse_redirect_parameters(params) == ("Organization/b", "full")
    with pytest.raises(FhirError) as info:
        parse_redirect_parameters({"resourceType": "Parameters", "parameter": [
            {"name": "target", "valueReference": {"reference": "Organization/b"}}]})
    assert info.value.status == 400 and "reason" in info.value.diagnostics
    with pytest.raises(FhirError):
        parse_redirect_parameters({"resourceType": "Task"})
