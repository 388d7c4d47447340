"""ServiceRequest lifecycle rules and the Tasks that follow it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import STALLED_SYSTEM
from fhir_server.workflow.service_request_rules import (
    check_service_request_write,
    follow_up_task_changes,
)
from tests.test_workflow_task_rules import OWNER, REQUESTER, SR, TARGETS, make_task

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


def sr(status: str, **extra) -> dict:
    return {**SR, "status": status, **extra}


def refused(prev, new, ctx, **kw) -> FhirError:
    with pytest.raises(FhirError) as info:
        check_service_request_write(prev, new, ctx, **kw)
    return info.value


def test_requester_controls_service_request():
    check_service_request_write(None, sr("active"), REQUESTER)
    check_service_request_write(sr("active"), sr("completed"), REQUESTER)
    check_service_request_write(sr("active"), sr("revoked"), SYSTEM)
    assert refused(None, sr("active"), OWNER).status == 403
    assert refused(sr("active"), sr("revoked"), OWNER).code == "forbidden"


@pytest.mark.parametrize(("old", "new"), [("completed", "active"), ("revoked", "active"),
                                          ("draft", "completed"), ("entered-in-error", "draft")])
def test_invalid_service_request_transitions(old, new):
    err = refused(sr(old), sr(new), REQUESTER)
    assert err.status == 422 and err.code == "business-rule"
    assert f"from {old} to {new}" in err.diagnostics


def test_unknown_status_and_fixed_fields():
    assert refused(None, sr("cancelled"), REQUESTER).code == "code-invalid"
    err = refused(sr("active"), sr("active", subject={"reference": "Patient/x"}), REQUESTER)
    assert err.issues[0].expression == ["ServiceRequest.subject"]
    check_service_request_write(sr("draft"), sr("draft", subject={"reference": "Patient/x"}),
                                REQUESTER)


def test_filler_order_needs_based_on():
    platform = AccessContext(organization="Organization/platform")
    order = sr("active", intent="filler-order", requester={"reference": "Organization/platform"})
    assert refused(None, order, platform).issues[0].expression == ["ServiceRequest.basedOn"]
    check_service_request_write(None, {**order, "basedOn": [{"reference": "ServiceRequest/sr1"}]},
                                platform)


def open_tasks() -> list[dict]:
    tasks = []
    for i, status in enumerate(["draft", "requested", "accepted", "in-progress", "on-hold",
                                "completed", "rejected"]):
        tasks.append(make_task(status, id=f"t{i}"))
    tasks[2]["businessStatus"] = {"coding": [{"system": STALLED_SYSTEM,
                                              "code": "stalled-not-started"}]}
    tasks.append(make_task("requested", id="other", focus={"reference": "ServiceRequest/x"}))
    return tasks


@pytest.mark.parametrize("closing", ["revoked", "completed"])
def test_closing_request_cancels_open_tasks_with_reason(closing):
    tasks = open_tasks()
    before = [dict(t) for t in tasks]
    changes = follow_up_task_changes(sr("active"), sr(closing), tasks, now=NOW)
    assert [t["id"] for t in changes] == ["t1", "t2", "t3", "t4"]
    for task in changes:
        assert task["status"] == "cancelled"
        assert task["statusReason"]["text"] == f"ServiceRequest/sr1 was {closing} by the requester"
        assert task["lastModified"].startswith("2026-03-02T09:30")
        assert "businessStatus" not in task
    assert tasks == before  # inputs untouched
    # each follow-up change passes the task rules for a system context
    from fhir_server.workflow.task_rules import check_task_write
    for task in changes:
        prev = next(t for t in tasks if t["id"] == task["id"])
        check_task_write(prev, task, SYSTEM, focus_service_request=sr(closing),
                         output_targets=TARGETS)


def test_entered_in_error_request_marks_tasks_entered_in_error():
    changes = follow_up_task_changes(sr("active"), sr("entered-in-error"), open_tasks(), now=NOW)
    assert {t["status"] for t in changes} == {"entered-in-error"}


def test_no_follow_up_without_closing_change():
    assert follow_up_task_changes(sr("active"), sr("on-hold"), open_tasks()) == []
    assert follow_up_task_changes(sr("revoked"), sr("revoked"), open_tasks()) == []


def test_prepare_writes_stamp_author_and_clear_mark():
    from fhir_server.workflow.authorship import author_of
    from fhir_server.workflow.stalled import current_mark, mark_stalled
    from fhir_server.workflow.write_path import prepare_service_request_write, prepare_task_write

    prev = mark_stalled(make_task("requested"))
    new = {**prev, "status": "accepted"}
    stored = prepare_task_write(prev, new, OWNER, focus_service_request=SR, output_targets={})
    assert current_mark(stored) is None
    assert author_of(stored) == {"reference": "Organization/cbo"}
    with pytest.raises(FhirError):
        prepare_task_write(prev, {**prev, "status": "completed"}, OWNER,
                           focus_service_request=SR, output_targets={})
    sr_new, tasks = prepare_service_request_write(sr("active"), sr("revoked"), REQUESTER,
                                                  open_tasks=[make_task("accepted")], now=NOW)
    assert author_of(sr_new)["reference"] == "Practitioner/dr"
    assert [t["status"] for t in tasks] == ["cancelled"]
    assert author_of(tasks[0])["reference"] == "Practitioner/dr"
