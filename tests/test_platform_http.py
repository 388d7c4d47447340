"""Coordination-platform mode (indirect referral) over HTTP: `$assign-recipient`, sub-Task
progress reflected onto the source Task, cancellation both ways, and the configurable
stalled-referral policy (FHIR_SERVER_STALLED_POLICY)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fhir_server.workflow.canonical import STALLED_SYSTEM
from tests.snapshot import db_snapshot
from tests.test_workflow_http import (
    Referrals,
    _TestPartyRequest,
    as_org,
    expressions,
    issue_text,
    moved,
    ref,
)

PLATFORM = "Organization/coordination-platform"
# routine requests stall after 2 hours here (default: 3 business days)
POLICY = "stat=1h,urgent=1bd,routine=2h,accepted=7d,in-progress=14d"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def platform_server(database):
    """A live server configured as the coordination platform, with the test party header."""
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.seed import seed_definitions
    from tests.live import FhirHttp, LiveServer

    settings = Settings.from_env(database_url=database.url.render_as_string(hide_password=False),
                                 base_url="", auth_mode="off", platform_organization=PLATFORM,
                                 stalled_policy=POLICY)
    app = create_app(settings, db=database)
    app.request_class = _TestPartyRequest
    seed_definitions(app.extensions["fhir_services"])
    live = LiveServer(app)
    client = FhirHttp(live.base)
    client.database = database
    client.app = app
    yield client
    live.stop()


@pytest.fixture(scope="module")
def world(platform_server):
    """EHR, two recipients, the platform Organization, a patient and the EHR's referral SR."""
    w = Referrals(platform_server)
    resp = platform_server.put(PLATFORM, {"resourceType": "Organization", "active": True,
                                          "id": PLATFORM.split("/")[1],
                                          "name": "Coordination Platform"})
    assert resp.status_code == 201, resp.text
    w.ehr, w.cbo, w.other = w.org("Harbor Clinic"), w.org("Bay Counseling"), w.org("Other CBO")
    w.patient_ref = w.patient()
    w.sr = w.service_request(w.patient_ref, w.ehr)
    return w


def source_task(w: Referrals, **extra: Any) -> dict:
    """A requested referral Task from the EHR to the platform."""
    return w.create(w.task_body(w.sr, w.ehr, PLATFORM, **extra), w.ehr)


def assign(server: Any, task: dict, recipient: str, org: str | None = PLATFORM,
           note: str | None = None, expect: int = 200) -> Any:
    params: list[dict] = [{"name": "recipient", "valueReference": ref(recipient)}]
    if note:
        params.append({"name": "note", "valueString": note})
    resp = server.post(f"Task/{task['id']}/$assign-recipient",
                       {"resourceType": "Parameters", "parameter": params},
                       headers=as_org(org))
    assert resp.status_code == expect, resp.text
    return resp


def routed(server: Any, w: Referrals, recipient: str | None = None) -> tuple[dict, dict, dict]:
    """(source Task, platform ServiceRequest, sub-Task) after a successful assignment."""
    source = source_task(w)
    entries = assign(server, source, recipient or w.cbo).json()["entry"]
    return tuple(e["resource"] for e in entries)  # type: ignore[return-value]


def read(server: Any, resource: dict) -> dict:
    return server.get(f"{resource['resourceType']}/{resource['id']}").json()


# -- the full referral ------------------------------------------------------------------
def test_full_platform_referral(platform_server, world):
    server, w = platform_server, world
    source = source_task(w)
    resp = assign(server, source, w.cbo, note="Prefers evening sessions")
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    accepted, sr, sub = (e["resource"] for e in bundle["entry"])
    assert accepted["id"] == source["id"] and accepted["status"] == "accepted"
    assert accepted["owner"] == ref(PLATFORM)
    assert sr["intent"] == "filler-order" and sr["status"] == "active"
    assert sr["basedOn"] == [ref(f"ServiceRequest/{w.sr['id']}")]
    assert sr["requester"] == ref(PLATFORM) and sr["performer"] == [ref(w.cbo)]
    assert sr["subject"] == w.sr["subject"] and sr["code"] == w.sr["code"]
    assert sub["status"] == "requested" and sub["partOf"] == [ref(f"Task/{source['id']}")]
    assert sub["focus"] == ref(f"ServiceRequest/{sr['id']}")
    assert sub["owner"] == ref(w.cbo) and sub["requester"] == ref(PLATFORM)
    assert sub["note"][0]["text"] == "Prefers evening sessions"
    for resource in (accepted, sr, sub):  # all three are stored
        assert read(server, resource)["meta"]["versionId"] == resource["meta"]["versionId"]

    sub = w.put(moved(sub, "accepted"), w.cbo).json()
    assert read(server, source)["status"] == "in-progress"
    sub = w.put(moved(sub, "in-progress"), w.cbo).json()
    assert read(server, source)["status"] == "in-progress"

    procedure = w.procedure(w.patient_ref, f"ServiceRequest/{sr['id']}", performers=(w.cbo,))
    done = w.put(moved(sub, "completed", procedure), w.cbo).json()
    assert done["status"] == "completed"
    final = read(server, source)
    assert final["status"] == "completed"
    outputs = [o["valueReference"]["reference"] for o in final["output"]]
    assert outputs == [procedure]
    assert final["output"][0]["type"]["coding"][0]["code"] == "resulting-activity"
    assert read(server, sr)["status"] == "completed"
    assert read(server, w.sr)["status"] == "active"  # the EHR's order is the EHR's to close
    timeline = server.get(f"Task/{source['id']}/$timeline").json()
    statuses = [next(p["valueCode"] for p in e["part"] if p["name"] == "status")
                for e in timeline["parameter"] if e["name"] == "event"]
    assert statuses == ["requested", "accepted", "in-progress", "completed"]


def test_practitioner_role_recipient_acts_through_its_organization(platform_server, world):
    server, w = platform_server, world
    role = w.create({"resourceType": "PractitionerRole", "active": True,
                     "organization": ref(w.cbo)})
    role_ref = f"PractitionerRole/{role['id']}"
    source, sr, sub = routed(server, w, role_ref)
    assert sub["owner"] == ref(role_ref) and sr["performer"] == [ref(role_ref)]
    w.put(moved(sub, "accepted"), w.cbo)  # the organization acts for its PractitionerRole
    assert read(server, source)["status"] == "in-progress"


# -- cancellation both ways -------------------------------------------------------------
def test_cancellation_by_the_ehr_propagates_down(platform_server, world):
    server, w = platform_server, world
    source, sr, sub = routed(server, w)
    w.put(moved(sub, "accepted"), w.cbo)
    source = read(server, source)
    assert source["status"] == "in-progress"
    cancelled = moved(source, "cancelled", statusReason={"text": "Patient moved away"})
    w.put(cancelled, w.ehr)
    sub_now = read(server, sub)
    assert sub_now["status"] == "cancelled"
    assert sub_now["statusReason"]["text"] == "Patient moved away"
    assert read(server, sr)["status"] == "revoked"
    assert read(server, source)["status"] == "cancelled"


def test_cancellation_by_the_recipient_propagates_up(platform_server, world):
    server, w = platform_server, world
    source, sr, sub = routed(server, w)
    sub = w.put(moved(sub, "accepted"), w.cbo).json()
    w.put(moved(sub, "cancelled", statusReason={"text": "Program closed"}), w.cbo)
    source_now = read(server, source)
    assert source_now["status"] == "cancelled"
    assert source_now["statusReason"]["text"] == "Program closed"
    assert read(server, sr)["status"] == "revoked"
    assert read(server, sub)["status"] == "cancelled"


def test_rejection_by_the_recipient_lets_the_platform_reroute(platform_server, world):
    server, w = platform_server, world
    source, sr, sub = routed(server, w)
    # while the first recipient still holds the referral, nothing else can be assigned
    before = db_snapshot(server.database)
    busy = assign(server, source, w.other, expect=422)
    assert "already routed" in issue_text(busy) and expressions(busy) == ["Task.status"]
    assert db_snapshot(server.database) == before

    w.put(moved(sub, "rejected", statusReason={"text": "No capacity"}), w.cbo)
    assert read(server, source)["status"] == "accepted"  # the platform routes elsewhere
    assert read(server, sr)["status"] == "revoked"
    _src, sr2, sub2 = (e["resource"] for e in assign(server, source, w.other).json()["entry"])
    assert sub2["owner"] == ref(w.other) and sr2["performer"] == [ref(w.other)]
    w.put(moved(sub2, "accepted"), w.other)
    assert read(server, source)["status"] == "in-progress"


# -- refused requests change nothing ----------------------------------------------------
def _refused(server: Any, task: dict, recipient: str, org: str | None, status: int,
             code: str, expression: str | None = None) -> str:
    before = db_snapshot(server.database)
    resp = assign(server, task, recipient, org=org, expect=status)
    issue = resp.json()["issue"][0]
    assert issue["code"] == code, resp.text
    if expression:
        assert expression in issue.get("expression", []), resp.text
    assert db_snapshot(server.database) == before
    return issue["diagnostics"]


def test_refused_assignments_change_nothing(platform_server, world):
    server, w = platform_server, world
    source = source_task(w)
    recipient_expr = "Parameters.parameter.where(name='recipient').value"
    assert "platform" in _refused(server, source, w.cbo, w.ehr, 403, "forbidden")
    # a third party does not even see the Task (the access layer hides it)
    _refused(server, source, w.cbo, w.cbo, 404, "not-found")
    _refused(server, {"id": "no-such-task"}, w.cbo, PLATFORM, 404, "not-found")
    _refused(server, source, "Organization/no-such-org", PLATFORM, 422, "not-found",
             recipient_expr)
    _refused(server, source, w.patient_ref, PLATFORM, 422, "business-rule", recipient_expr)
    inactive = w.create({"resourceType": "Organization", "active": False, "name": "Closed"})
    assert "not active" in _refused(server, source, f"Organization/{inactive['id']}",
                                    PLATFORM, 422, "business-rule", recipient_expr)
    elsewhere = w.create(w.task_body(w.sr, w.ehr, w.other), w.ehr)
    _refused(server, elsewhere, w.cbo, PLATFORM, 404, "not-found")  # not the platform's
    assert "owned by" in _refused(server, elsewhere, w.cbo, None, 403, "forbidden",
                                  "Task.owner")  # even a privileged caller may not
    cancelled = w.put(moved(source, "cancelled"), w.ehr).json()
    assert "cannot be routed" in _refused(server, cancelled, w.cbo, PLATFORM, 422,
                                          "business-rule", "Task.status")


def test_malformed_parameters_are_400(platform_server, world):
    server, w = platform_server, world
    source = source_task(w)
    before = db_snapshot(server.database)
    url = f"Task/{source['id']}/$assign-recipient"
    no_recipient = server.post(url, {"resourceType": "Parameters", "parameter": [
        {"name": "note", "valueString": "hello"}]}, headers=as_org(PLATFORM))
    assert no_recipient.status_code == 400
    assert expressions(no_recipient) == ["Parameters.parameter.where(name='recipient').value"]
    not_parameters = server.post(url, {"resourceType": "Basic", "code": {"text": "x"}},
                                 headers=as_org(PLATFORM))
    assert not_parameters.status_code == 400
    blank_note = server.post(url, {"resourceType": "Parameters", "parameter": [
        {"name": "recipient", "valueReference": ref(w.cbo)},
        {"name": "note", "valueString": " "}]}, headers=as_org(PLATFORM))
    assert blank_note.status_code == 400
    assert expressions(blank_note) == ["Parameters.parameter.where(name='note').value"]
    assert db_snapshot(server.database) == before


def test_operation_needs_the_platform_setting(server, platform_server, world):
    """Without FHIR_SERVER_PLATFORM_ORGANIZATION (same database) the operation does not exist,
    and only the platform server's CapabilityStatement lists it."""
    source = source_task(world)
    before = db_snapshot(server.database)
    resp = server.post(f"Task/{source['id']}/$assign-recipient", {
        "resourceType": "Parameters",
        "parameter": [{"name": "recipient", "valueReference": ref(world.cbo)}]})
    assert resp.status_code == 404 and resp.json()["issue"][0]["code"] == "not-supported"
    assert db_snapshot(server.database) == before
    # (read without the client's schema check: the CapabilityStatement is large)
    assert "assign-recipient" not in server.session.get(f"{server.base}/metadata").text
    assert "assign-recipient" in platform_server.session.get(
        f"{platform_server.base}/metadata").text
    definition = platform_server.get("OperationDefinition/Task-assign-recipient").json()
    assert definition["code"] == "assign-recipient" and definition["instance"] is True


# -- stalled policy setting -------------------------------------------------------------
def test_configured_stalled_policy_drives_the_sweep(platform_server, world):
    from fhir_server.jobs import stalled_sweep

    w = world
    task = w.create(w.task_body(w.sr, w.ehr, w.cbo), w.ehr)  # routine, requested
    services = platform_server.app.extensions["fhir_services"]
    stalled_sweep(services, now=datetime.now(UTC) + timedelta(hours=1))
    assert "businessStatus" not in read(platform_server, task)
    stalled_sweep(services, now=datetime.now(UTC) + timedelta(hours=3))  # default: 3 bd
    codings = read(platform_server, task)["businessStatus"]["coding"]
    assert [(c["system"], c["code"]) for c in codings] == [
        (STALLED_SYSTEM, "stalled-not-accepted")]


@pytest.mark.parametrize(("value", "message"), [
    ("stat=soon", "Bad deadline 'soon'"),
    ("weekly=1d", "Unknown stalled-policy setting 'weekly'"),
    ("stat", "'stat' is not key=value"),
    ("stat=1h,stat=2h", "'stat' is given twice"),
    ("timezone=Mars/Base", "Mars/Base"),
    ("holidays=2026-12-25,2026-13-01", "month must be in 1..12"),
])
def test_bad_stalled_policy_stops_the_start(value, message, monkeypatch, tmp_path):
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.workflow.stalled import parse_stalled_policy

    monkeypatch.setenv("FHIR_SERVER_STALLED_POLICY", value)
    settings = Settings.from_env(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}",
                                 auth_mode="off")
    with pytest.raises(ValueError, match="FHIR_SERVER_STALLED_POLICY") as caught:
        create_app(settings)
    assert message in str(caught.value)
    with pytest.raises(ValueError):
        parse_stalled_policy(value)


def test_good_stalled_policy_values_parse():
    from fhir_server.workflow.stalled import parse_stalled_policy

    policy = parse_stalled_policy("stat=2h, urgent=2bd ,routine=5bd,accepted=3d,"
                                  "in-progress=10d,timezone=America/New_York,"
                                  "holidays=2026-12-25,2026-12-31")
    assert (policy.acceptance["stat"].amount, policy.acceptance["stat"].unit) == (2, "hours")
    assert policy.acceptance["urgent"].unit == "business_days"
    assert policy.acceptance["asap"].amount == 4  # unspecified keys keep their defaults
    assert (policy.start_within.amount, policy.progress_within.amount) == (3, 10)
    assert policy.timezone == "America/New_York"
    assert {d.isoformat() for d in policy.holidays} == {"2026-12-25", "2026-12-31"}


def test_bad_platform_setting_stops_the_start(tmp_path):
    from fhir_server.app import create_app
    from fhir_server.config import Settings

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.sqlite3'}", auth_mode="off",
                        platform_organization="Practitioner/1")
    with pytest.raises(ValueError, match="FHIR_SERVER_PLATFORM_ORGANIZATION"):
        create_app(settings)


def test_worker_refuses_to_start_with_a_bad_policy(tmp_path):
    env = {**os.environ, "FHIR_SERVER_STALLED_POLICY": "routine=3 weeks",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'fhir.sqlite3'}"}
    proc = subprocess.run([sys.executable, "-m", "fhir_server", "worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "FHIR_SERVER_STALLED_POLICY: Bad deadline '3 weeks'" in proc.stderr


def test_operation_definition_is_published_and_valid():
    from fhir.resources.R4B.operationdefinition import OperationDefinition

    from fhir_server.interactions.operation_definitions import definitions as operation_definitions

    (op,) = [o for o in operation_definitions() if o["code"] == "assign-recipient"]
    OperationDefinition.model_validate(op)
    assert op["instance"] and op["affectsState"] and op["resource"] == ["Task"]
    assert {p["name"]: p["min"] for p in op["parameter"] if p["use"] == "in"} == {
        "recipient": 1, "note": 0}
