"""Bad input: the right status, an OperationOutcome pointing at the element, nothing written."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from fhir_server.storage.schema import history, resources
from tests.samples import sample


def _counts(server) -> tuple[int, int]:
    with server.database.read() as conn:
        return (conn.execute(select(func.count()).select_from(resources)).scalar_one(),
                conn.execute(select(func.count()).select_from(history)).scalar_one())


def _raw(server, method, path, data, ctype="application/fhir+json", **headers):
    return server.request(method, path, data=data, headers={"Content-Type": ctype, **headers})


BAD_BODIES = [
    ("malformed JSON", b'{"resourceType": "Patient",', 400, None),
    ("not an object", b'[1, 2]', 400, None),
    ("wrong resourceType", json.dumps(sample("Observation")).encode(), 400, ["resourceType"]),
    ("unknown element", json.dumps({**sample("Patient"), "favouriteColour": "blue"}).encode(),
     400, ["Patient.favouriteColour"]),
    ("wrong datatype", json.dumps({**sample("Patient"), "birthDate": "02/04/1990"}).encode(),
     400, ["Patient.birthDate"]),
    ("wrong nested type", json.dumps({**sample("Patient"), "name": [{"given": "Ana"}]}).encode(),
     400, ["Patient.name[0].given"]),
    ("bad reference", json.dumps({**sample("Patient"),
                                  "managingOrganization": {"reference": "not a ref"}}).encode(),
     400, ["Patient.managingOrganization.reference"]),
    ("missing resourceType", b'{"name": []}', 400, ["resourceType"]),
    ("empty body", b"", 400, None),
]


@pytest.mark.parametrize("label,data,status,expression", BAD_BODIES,
                         ids=[b[0] for b in BAD_BODIES])
def test_bad_create_bodies(server, label, data, status, expression):
    before = _counts(server)
    resp = _raw(server, "POST", "Patient", data)
    assert resp.status_code == status, resp.text
    issue = resp.json()["issue"][0]
    assert issue["severity"] == "error"
    if expression:
        assert issue["expression"] == expression
    assert _counts(server) == before


@pytest.mark.parametrize("bad_id, status", [
    ("a" * 65, 400), ("has space", 400), ("under_score", 400), ("é", 400),
    ("slash%2Fx", 404),  # the decoded slash makes it a path no route serves
])
def test_bad_ids_on_update(server, bad_id, status):
    before = _counts(server)
    resp = server.put(f"Patient/{bad_id}", sample("Patient", id=bad_id))
    assert resp.status_code == status, resp.text
    assert _counts(server) == before


def test_unknown_resource_type_is_404(server):
    assert server.get("Spaceship/1").status_code == 404
    resp = server.post("Spaceship", {"resourceType": "Spaceship"})
    assert resp.status_code == 404
    assert resp.json()["issue"][0]["code"] == "not-supported"


def test_method_not_allowed_is_405(server):
    resp = server.request("POST", "Patient/123")
    assert resp.status_code == 405
    assert "PUT" in resp.headers["Allow"]
    assert server.request("DELETE", "metadata").status_code == 405
    assert server.request("PUT", "Patient/_history").status_code == 405


def test_unsupported_media_types(server):
    before = _counts(server)
    resp = _raw(server, "POST", "Patient", b"name=x", ctype="text/plain")
    assert resp.status_code == 415
    resp = _raw(server, "POST", "Patient", b"<Patient/>", ctype="application/pdf")
    assert resp.status_code == 415
    assert _counts(server) == before


def test_unacceptable_accept_is_406(server):
    resp = server.get("metadata", headers={"Accept": "application/pdf"})
    assert resp.status_code == 406
    assert resp.json()["resourceType"] == "OperationOutcome"


def test_body_over_limit_is_413(server):
    limit = server.app.extensions["fhir_services"].settings.max_body_bytes
    big = sample("Patient")
    big["text"] = {"status": "generated",
                   "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">" + "x" * (limit + 10)
                          + "</div>"}
    before = _counts(server)
    resp = _raw(server, "POST", "Patient", json.dumps(big).encode())
    assert resp.status_code == 413
    assert _counts(server) == before


def test_delete_of_deleted_then_read_410_and_unknown_404(server):
    assert server.get("Patient/does-not-exist").status_code == 404


def test_unknown_path_is_404(server):
    assert server.get("Patient/1/_history/1/extra").status_code == 404
