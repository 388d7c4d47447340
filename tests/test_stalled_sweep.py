"""The worker's stalled-referral sweep (fhir_server.jobs.stalled_sweep) with a fake clock,
against referral Tasks written over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fhir_server.jobs import stalled_sweep
from fhir_server.workflow.canonical import STALLED_SYSTEM
from tests.test_workflow_http import Referrals, _TestPartyRequest, as_org, etag, moved


@pytest.fixture(scope="module")
def world(server):
    server.app.request_class = _TestPartyRequest
    w = Referrals(server)
    w.requester, w.owner = w.org("Clinic"), w.org("CBO")
    w.patient_ref = w.patient()
    w.sr = w.service_request(w.patient_ref, w.requester)
    w.services = server.app.extensions["fhir_services"]
    return w


def mark(task: dict) -> str | None:
    codings = (task.get("businessStatus") or {}).get("coding") or []
    return next((c["code"] for c in codings if c.get("system") == STALLED_SYSTEM), None)


def sweep(world, **delta: float) -> int:
    return stalled_sweep(world.services, now=datetime.now(UTC) + timedelta(**delta))


def test_requested_task_marked_then_cleared_by_acceptance(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    assert sweep(world, hours=1) == 0
    assert world.read(task)["meta"]["versionId"] == task["meta"]["versionId"]
    assert sweep(world, days=10) == 1
    marked = world.read(task)
    assert mark(marked) == "stalled-not-accepted"
    assert sweep(world, days=10) == 0  # idempotent: already marked
    timeline = server.get(f"Task/{task['id']}/$timeline").json()
    kinds = [next(p["valueCode"] for p in e["part"] if p["name"] == "kind")
             for e in timeline["parameter"] if e["name"] == "event"]
    assert kinds == ["status", "stalled"]
    accepted = world.put(moved(marked, "accepted"), world.owner).json()
    assert mark(accepted) is None  # a status change drops the mark
    assert sweep(world, days=8) == 1
    assert mark(world.read(task)) == "stalled-not-started"
    assert sweep(world) == 1  # back at the real clock: not stalled any more
    assert mark(world.read(task)) is None


def test_in_progress_without_update_and_stat_priority(world):
    working = world.task(world.sr, world.requester, world.owner, "in-progress")
    stat = world.create(world.task_body(world.sr, world.requester, world.owner,
                                        priority="stat"), world.requester)
    assert sweep(world, hours=2) == 1
    assert mark(world.read(stat)) == "stalled-not-accepted"
    assert mark(world.read(working)) is None
    sweep(world, days=15)
    assert mark(world.read(working)) == "stalled-no-progress"


def test_marking_is_not_an_owner_edit_and_sweep_skips_closed(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    done = world.task(world.sr, world.requester, world.owner, "rejected")
    sweep(world, days=30)
    marked = world.read(task)
    assert mark(marked) == "stalled-not-accepted"
    assert world.read(done)["meta"]["versionId"] == done["meta"]["versionId"]
    # the owner's update of a marked Task is judged without the server-managed mark
    resp = server.put(f"Task/{task['id']}", moved(marked, "rejected"),
                      headers={**etag(marked), **as_org(world.owner)})
    assert resp.status_code == 200 and mark(resp.json()) is None, resp.text
