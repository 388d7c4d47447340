"""Referral Task rules that no other test would notice breaking, over HTTP, each with the
exact status, issue code and expression: terminal Tasks stay closed, a correction to
entered-in-error changes nothing else, fixed fields stay fixed for every caller (the
privileged one too), work does not start while the ServiceRequest is on hold."""

from __future__ import annotations

import copy

import pytest

from tests.snapshot import db_snapshot
from tests.test_workflow_http import (  # noqa: F401 (parties, world: fixtures)
    Referrals,
    as_org,
    etag,
    moved,
    parties,
    world,
)


@pytest.fixture(scope="module")
def w(world):  # noqa: F811 (the imported fixture, under a short name)
    """The referral world of test_workflow_http (requester, owner, patient, SR, Procedure)."""
    return world


def refused(w: Referrals, task: dict, org: str | None) -> dict:
    """PUT `task` as `org`, expect a refusal that changed nothing; (status, code, expression)."""
    before = db_snapshot(w.server.database)
    resp = w.server.put(f"Task/{task['id']}", task, headers={**etag(task), **as_org(org)})
    assert db_snapshot(w.server.database) == before
    issue = resp.json()["issue"][0]
    return {"status": resp.status_code, "code": issue["code"],
            "expression": issue.get("expression")}


# Who may still act on a Task in each terminal status (by the state machine).
TERMINAL_ACTORS = {"rejected": "owner", "cancelled": "requester", "failed": "owner",
                   "completed": "owner"}


@pytest.mark.parametrize("status", sorted(TERMINAL_ACTORS))
@pytest.mark.parametrize("actor", ["party", "privileged"])
@pytest.mark.parametrize("field, value", [("note", [{"text": "late edit"}]),
                                          ("priority", "urgent"),
                                          ("description", "rewritten")])
def test_terminal_task_stays_closed(w, status, actor, field, value):
    task = w.task(w.sr, w.requester, w.owner, status, w.proc)
    org = getattr(w, TERMINAL_ACTORS[status]) if actor == "party" else None
    edited = copy.deepcopy(task)
    edited[field] = value
    assert refused(w, edited, org) == {"status": 422, "code": "business-rule",
                                       "expression": [f"Task.{field}"]}


@pytest.mark.parametrize("status", sorted(TERMINAL_ACTORS))
def test_terminal_task_keeps_its_reason(w, status):
    task = w.task(w.sr, w.requester, w.owner, status, w.proc)
    edited = copy.deepcopy(task)
    edited["statusReason"] = {"text": "a different story"}
    assert refused(w, edited, None) == {"status": 422, "code": "business-rule",
                                        "expression": ["Task.statusReason"]}


@pytest.mark.parametrize("field, value", [("note", [{"text": "sneaked in"}]),
                                          ("priority", "stat")])
def test_correction_to_entered_in_error_changes_nothing_else(w, field, value):
    task = w.task(w.sr, w.requester, w.owner, "completed", w.proc)
    corrected = moved(task, "entered-in-error", **{field: value})
    assert refused(w, corrected, w.requester) == {"status": 422, "code": "business-rule",
                                                  "expression": [f"Task.{field}"]}
    done = w.put(moved(task, "entered-in-error"), w.requester).json()
    assert done["status"] == "entered-in-error"
    assert done.get(field) == task.get(field)


@pytest.mark.parametrize("field, value", [
    ("requester", {"reference": "Organization/elsewhere"}),
    ("code", {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                          "code": "approve"}]}),
    ("authoredOn", "2026-11-03T10:00:00Z"),
    ("intent", "original-order"),
    ("partOf", [{"reference": "Task/other"}]),
])
@pytest.mark.parametrize("actor", ["requester", "privileged"])
def test_fixed_fields_cannot_change_after_sending(w, field, value, actor):
    # Without the profile claim (whose fixed code and intent would answer first): a Task
    # that was a referral Task stays under the referral rules.
    task = w.task(w.sr, w.requester, w.owner, "requested", meta={"source": "urn:test:no-profile"})
    changed = copy.deepcopy(task)
    changed[field] = value
    org = w.requester if actor == "requester" else None
    # The referral rules (write phase prepare) answer before the profiles (phase check),
    # intent included, although the required referral profile also fixes it to 'order'.
    assert refused(w, changed, org) == {"status": 422, "code": "business-rule",
                                        "expression": [f"Task.{field}"]}


def test_draft_may_still_be_edited_by_its_requester(w):
    task = w.task(w.sr, w.requester, w.owner, "draft")
    changed = copy.deepcopy(task)
    changed["authoredOn"] = "2026-11-03T10:00:00Z"
    changed["priority"] = "urgent"
    resp = w.put(changed, w.requester)
    assert resp.json()["authoredOn"] == "2026-11-03T10:00:00Z"


def test_owner_cannot_be_swapped_once_accepted(w):
    task = w.task(w.sr, w.requester, w.owner, "accepted")
    other = w.third
    for org in (w.requester, None):
        changed = copy.deepcopy(task)
        changed["owner"] = {"reference": other}
        assert refused(w, changed, org) == {"status": 422, "code": "business-rule",
                                            "expression": ["Task.owner"]}


def test_owner_may_not_edit_other_fields(w):
    task = w.task(w.sr, w.requester, w.owner, "accepted")
    changed = copy.deepcopy(task)
    changed["priority"] = "asap"
    assert refused(w, changed, w.owner) == {"status": 403, "code": "forbidden",
                                            "expression": ["Task.priority"]}


def test_work_does_not_start_while_the_service_request_is_on_hold(w):
    sr = w.service_request(w.patient_ref, w.requester)
    task = w.task(sr, w.requester, w.owner, "accepted")
    held = dict(sr, status="on-hold")
    resp = w.server.put(f"ServiceRequest/{sr['id']}", held, headers=as_org(w.requester))
    assert resp.status_code == 200, resp.text
    assert refused(w, moved(task, "in-progress"), w.owner) == {
        "status": 422, "code": "business-rule", "expression": ["Task.focus"]}
    on_hold = w.put(moved(task, "on-hold"), w.owner).json()
    assert on_hold["status"] == "on-hold"


def test_status_roles_and_reasons(w):
    task = w.task(w.sr, w.requester, w.owner, "requested")
    assert refused(w, moved(task, "accepted"), w.requester) == {
        "status": 403, "code": "forbidden", "expression": ["Task.status"]}
    no_reason = moved(task, "rejected")
    del no_reason["statusReason"]
    assert refused(w, no_reason, w.owner) == {
        "status": 422, "code": "business-rule", "expression": ["Task.statusReason.text"]}
    blank = moved(task, "rejected", statusReason={"text": "  "})
    assert refused(w, blank, w.owner)["expression"] == ["Task.statusReason.text"]
    assert refused(w, moved(task, "in-progress"), w.owner) == {
        "status": 422, "code": "business-rule", "expression": ["Task.status"]}
    assert refused(w, moved(task, "received"), None) == {
        "status": 422, "code": "code-invalid", "expression": ["Task.status"]}


def test_created_task_must_be_new_and_for_the_service_requests_patient(w):
    other_patient = w.patient()
    body = w.task_body(w.sr, w.requester, w.owner, **{"for": {"reference": other_patient}})
    resp = w.server.post("Task", body, headers=as_org(w.requester))
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Task.for"]
    body = w.task_body(w.sr, w.requester, w.owner, status="accepted")
    resp = w.server.post("Task", body, headers=as_org(w.requester))
    assert (resp.status_code, resp.json()["issue"][0]["expression"]) == (422, ["Task.status"])
    body = w.task_body(w.sr, w.requester, w.owner)
    body["focus"] = {"reference": "ServiceRequest/unknown"}
    resp = w.server.post("Task", body, headers=as_org(w.requester))
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["code"] == "business-rule"
