"""Core REST interactions over HTTP on a live server, on every database backend."""

from __future__ import annotations

import json

import pytest

from tests.samples import REFERRAL_TYPES, sample

pytestmark = pytest.mark.usefixtures("sample_world")


@pytest.mark.parametrize("res_type", [t for t in REFERRAL_TYPES if t != "AuditEvent"])
def test_referral_type_create_read_update_delete(server, res_type):
    created = server.post(res_type, sample(res_type))
    assert created.status_code == 201
    body = created.json()
    rid = body["id"]
    assert body["meta"]["versionId"] == "1"
    assert created.headers["ETag"] == 'W/"1"'
    assert created.headers["Location"].endswith(f"/fhir/{res_type}/{rid}/_history/1")
    assert created.headers["Last-Modified"].endswith("GMT")
    assert created.headers["Content-Type"].startswith("application/fhir+json")

    read = server.get(f"{res_type}/{rid}")
    assert read.status_code == 200 and read.json() == body

    body["text"] = {"status": "generated",
                    "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">updated</div>"}
    updated = server.put(f"{res_type}/{rid}", body, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["ETag"] == 'W/"2"'

    assert server.get(f"{res_type}/{rid}/_history/1").json()["meta"]["versionId"] == "1"
    assert server.delete(f"{res_type}/{rid}").status_code == 200
    gone = server.get(f"{res_type}/{rid}")
    assert gone.status_code == 410
    history = server.get(f"{res_type}/{rid}/_history").json()
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"3"', 'W/"2"', 'W/"1"']
    assert history["entry"][0]["request"]["method"] == "DELETE"
    assert "resource" not in history["entry"][0]


def test_create_ignores_client_id_and_keeps_content(server):
    resource = sample("Patient", id="client-chosen")
    resource["extension"] = [{"url": "http://example.org/x", "valueString": "kept"}]
    body = server.post("Patient", resource).json()
    assert body["id"] != "client-chosen"
    assert body["extension"] == resource["extension"]
    assert body["name"] == resource["name"]


def test_prefer_return(server):
    minimal = server.post("Patient", sample("Patient"), headers={"Prefer": "return=minimal"})
    assert minimal.status_code == 201 and minimal.content == b""
    assert minimal.headers["Location"]
    oo = server.post("Patient", sample("Patient"),
                     headers={"Prefer": "return=OperationOutcome"})
    assert oo.status_code == 201 and oo.json()["resourceType"] == "OperationOutcome"
    rep = server.post("Patient", sample("Patient"), headers={"Prefer": "return=representation"})
    assert rep.json()["resourceType"] == "Patient"


def test_update_as_create_with_client_id(server):
    resp = server.put("Organization/org-client-1", sample("Organization", id="org-client-1"))
    assert resp.status_code == 201
    assert resp.headers["Location"].endswith("/Organization/org-client-1/_history/1")
    again = server.put("Organization/org-client-1", sample("Organization", id="org-client-1"))
    assert again.status_code == 200 and again.json()["meta"]["versionId"] == "2"


def test_update_version_conflict_is_412(server):
    rid = server.post("Task", sample("Task")).json()["id"]
    body = server.get(f"Task/{rid}").json()
    ok = server.put(f"Task/{rid}", body, headers={"If-Match": 'W/"1"'})
    assert ok.status_code == 200
    stale = server.put(f"Task/{rid}", body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["issue"][0]["code"] == "conflict"
    bad = server.put(f"Task/{rid}", body, headers={"If-Match": "garbage"})
    assert bad.status_code == 400
    assert server.get(f"Task/{rid}").json()["meta"]["versionId"] == "2"


def test_update_id_mismatch_and_missing_id(server):
    rid = server.post("Patient", sample("Patient")).json()["id"]
    mismatch = server.put(f"Patient/{rid}", sample("Patient", id="other"))
    assert mismatch.status_code == 400
    assert mismatch.json()["issue"][0]["expression"] == ["Patient.id"]
    missing = server.put(f"Patient/{rid}", sample("Patient"))
    assert missing.status_code == 400


def test_conditional_read_headers(server):
    created = server.post("Patient", sample("Patient"))
    rid = created.json()["id"]
    not_modified = server.get(f"Patient/{rid}", headers={"If-None-Match": 'W/"1"'})
    assert not_modified.status_code == 304 and not_modified.content == b""
    changed = server.get(f"Patient/{rid}", headers={"If-None-Match": 'W/"7"'})
    assert changed.status_code == 200
    since = server.get(f"Patient/{rid}",
                       headers={"If-Modified-Since": created.headers["Last-Modified"]})
    assert since.status_code == 304
    old = server.get(f"Patient/{rid}", headers={"If-Modified-Since":
                                                "Mon, 01 Jan 2001 00:00:00 GMT"})
    assert old.status_code == 200


def test_vread_unknown_versions(server):
    rid = server.post("Patient", sample("Patient")).json()["id"]
    assert server.get(f"Patient/{rid}/_history/9").status_code == 404
    assert server.get(f"Patient/{rid}/_history/x").status_code == 404
    assert server.get("Patient/nope/_history/1").status_code == 404


def test_delete_is_idempotent_and_history_kept(server):
    rid = server.post("Condition", sample("Condition")).json()["id"]
    assert server.delete(f"Condition/{rid}").status_code == 200
    assert server.delete(f"Condition/{rid}").status_code == 200
    assert server.get(f"Condition/{rid}/_history/1").status_code == 200
    assert server.get(f"Condition/{rid}/_history/2").status_code == 410
    assert server.delete("Condition/never-existed").status_code == 200
    # re-create after delete: a new version continues the history
    again = server.put(f"Condition/{rid}", sample("Condition", id=rid))
    assert again.status_code == 201 and again.json()["meta"]["versionId"] == "3"


def test_json_patch(server):
    rid = server.post("Task", sample("Task")).json()["id"]
    ops = [{"op": "replace", "path": "/status", "value": "accepted"},
           {"op": "add", "path": "/businessStatus", "value": {"text": "accepted by CBO"}}]
    resp = server.patch(f"Task/{rid}", ops, headers={"If-Match": 'W/"1"'})
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "accepted" and resp.json()["meta"]["versionId"] == "2"
    failed_test = server.patch(f"Task/{rid}", [{"op": "test", "path": "/status",
                                                "value": "requested"}])
    assert failed_test.status_code == 422
    invalid = server.patch(f"Task/{rid}", [{"op": "replace", "path": "/status",
                                            "value": 42}])
    assert invalid.status_code == 400
    assert invalid.json()["issue"][0]["expression"] == ["Task.status"]
    bad_doc = server.patch(f"Task/{rid}", {"op": "replace"})
    assert bad_doc.status_code == 400
    change_id = server.patch(f"Task/{rid}", [{"op": "replace", "path": "/id", "value": "x"}])
    assert change_id.status_code == 422
    wrong_type = server.request("PATCH", f"Task/{rid}", data=json.dumps(ops),
                                headers={"Content-Type": "application/fhir+json"})
    assert wrong_type.status_code == 415
    assert server.get(f"Task/{rid}").json()["meta"]["versionId"] == "2"


def test_audit_events_are_written_by_the_server_only(server):
    """The audit log is append-only and server-written (fhir_server/auth/README.md)."""
    for resp in (server.post("AuditEvent", sample("AuditEvent")),
                 server.put("AuditEvent/x", dict(sample("AuditEvent"), id="x")),
                 server.delete("AuditEvent/x")):
        assert resp.status_code == 405, resp.text
        assert resp.json()["resourceType"] == "OperationOutcome"
        assert resp.headers["Allow"] == "GET"
