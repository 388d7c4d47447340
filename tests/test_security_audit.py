"""Audit as FHIR: every read of patient data and every denial is an AuditEvent following
the IHE Basic Audit Log Patterns, and an administrator can ask who saw a patient's record
(`AuditEvent?patient=`, `?entity=`, `?agent=`, `?date=`) over HTTP with real tokens."""

from __future__ import annotations

import time

import pytest

from fhir_server.auth.audit_store import count_audit, purge_before
from tests.live import assert_valid_fhir
from tests.security_support import directory, referral, start

BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit."


@pytest.fixture(scope="module")
def world(database):
    server = start(database)
    directory(server, ["A", "B", "E"])
    for client, org in (("ehr-a", "A"), ("cbo-b", "B"), ("evil", "E")):
        server.register(client, org)
    server.add_user("privacy_officer", "A", admin=True)
    server.add_user("dr_b", "B")
    server.ref = referral(server.client("ehr-a"), "A", "B", patient_name="Rivera",
                          consent=True)
    yield server
    server.live.stop()


def flushed(world) -> None:
    """Read AuditEvents are written in batches: write the queued ones now."""
    world.services.audit_queue.flush()


def events(world, admin, **params) -> list[dict]:
    flushed(world)
    resp = admin.get("AuditEvent", params={"_count": 1000, **params})
    assert resp.status_code == 200, resp.text
    return [e["resource"] for e in resp.json().get("entry", [])]


def test_who_saw_this_patient(world):
    patient = world.ref["patient"]
    b = world.client("cbo-b")
    assert b.get(patient).status_code == 200
    found = b.get("QuestionnaireResponse", params={"subject": patient}).json()
    assert found.get("total") == 1
    admin = world.user_client("privacy_officer")
    seen = events(world, admin, patient=patient)
    readers = {a["who"]["identifier"]["value"] for e in seen for a in e["agent"]
               if a.get("who", {}).get("identifier")}
    assert "cbo-b" in readers
    read = next(e for e in seen if e["subtype"][0]["code"] == "read"
                and any(a.get("who", {}).get("identifier", {}).get("value") == "cbo-b"
                        for a in e["agent"]))
    assert read["meta"]["profile"] == [BALP + "PatientRead"]
    assert read["action"] == "R" and read["outcome"] == "0"
    patient_entity = [x for x in read["entity"] if x.get("role", {}).get("code") == "1"]
    assert [x["what"]["reference"] for x in patient_entity] == [patient]
    assert_valid_fhir(read)
    query = next(e for e in seen if e["subtype"][0]["code"] == "search-type"
                 and "cbo-b" in str(e["agent"]))
    assert query["meta"]["profile"] == [BALP + "PatientQuery"]
    assert any(x.get("role", {}).get("code") == "24" and x.get("query") for x in query["entity"])
    by_agent = events(world, admin, agent="cbo-b")
    assert {e["id"] for e in seen if "cbo-b" in str(e["agent"])} <= {e["id"] for e in by_agent}


def test_denials_are_audited_and_searchable_by_date(world):
    evil = world.client("evil")
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 2))
    assert evil.get(world.ref["qr"]).status_code == 404
    admin = world.user_client("privacy_officer")
    denied = events(world, admin, entity=world.ref["qr"], outcome="4", date=f"ge{before}")
    assert any("evil" in str(e["agent"]) for e in denied), denied
    assert events(world, admin, entity=world.ref["qr"], date="lt2000-01-01") == []


def test_only_administrators_read_the_audit_log(world):
    for http in (world.client("cbo-b"), world.user_client("dr_b")):
        assert http.get("AuditEvent").status_code == 403
        assert http.get("$audit-events").status_code == 403
    admin = world.user_client("privacy_officer")
    some = events(world, admin)
    assert some and admin.get(f"AuditEvent/{some[0]['id']}").status_code == 200
    assert admin.post("AuditEvent", some[0]).status_code == 405
    assert admin.delete(f"AuditEvent/{some[0]['id']}").status_code == 405
    bad = admin.get("AuditEvent", params={"colour": "red"})
    assert bad.status_code == 400 and bad.json()["issue"][0]["expression"] == ["colour"]


def test_paging_and_retention(world):
    admin = world.user_client("privacy_officer")
    flushed(world)
    first = admin.get("AuditEvent", params={"_count": 2}).json()
    nxt = [link["url"] for link in first["link"] if link["relation"] == "next"]
    assert len(first["entry"]) == 2 and nxt
    second = admin.get(nxt[0].split("/fhir/", 1)[1]).json()
    assert {e["resource"]["id"] for e in second["entry"]}.isdisjoint(
        {e["resource"]["id"] for e in first["entry"]})
    flushed(world)  # the reads above queued their own events: count after they are written
    total = count_audit(world.database)
    assert purge_before(world.database, 0) == 0  # nothing older than 1970
    assert count_audit(world.database) == total
