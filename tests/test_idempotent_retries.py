"""Idempotent retries: a client that sends a write again after losing the response does not
write twice: with an Idempotency-Key / X-Request-Id header it gets the first response back;
a referral Bundle whose every entry is a conditional create is idempotent without one. The
kill test loses the response of a committed 500-entry transaction for real: a SIGKILL of
the gunicorn worker while it is writing the response."""

from __future__ import annotations

import json
import socket
import time
import uuid
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from fhir_server.storage.schema import resources
from tests.processes import gunicorn_workers, init_db, start_server
from tests.samples import sample

ROOT = Path(__file__).resolve().parents[1]
JSON = "application/fhir+json"


def _count(database, res_type: str) -> int:
    with database.read() as conn:
        return conn.execute(select(func.count()).select_from(resources).where(
            resources.c.res_type == res_type, resources.c.deleted.is_(False))).scalar_one()


def _post(server, path: str, body: dict, **headers: str) -> requests.Response:
    return server.request("POST", path, data=json.dumps(body),
                          headers={"Content-Type": JSON, **headers})


# -- semantics on the in-process server ---------------------------------------------------
def test_same_key_same_request_gets_the_first_response(server):
    key = uuid.uuid4().hex
    body = sample("Patient", identifier=[{"system": "urn:x", "value": key}])
    first = _post(server, "Patient", body, **{"Idempotency-Key": key})
    again = _post(server, "Patient", body, **{"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert again.json() == first.json()
    assert again.headers["Location"] == first.headers["Location"]
    assert again.headers["ETag"] == first.headers["ETag"]
    found = server.get(f"Patient?identifier=urn:x|{key}").json()
    assert found["total"] == 1


def test_x_request_id_works_too(server):
    key = uuid.uuid4().hex
    body = sample("Patient", identifier=[{"system": "urn:x", "value": key}])
    ids = {_post(server, "Patient", body, **{"X-Request-Id": key}).json()["id"]
           for _ in range(3)}
    assert len(ids) == 1


def test_same_key_different_request_is_422(server):
    key = uuid.uuid4().hex
    assert _post(server, "Patient", sample("Patient"), **{"Idempotency-Key": key}
                 ).status_code == 201
    resp = _post(server, "Patient", sample("Patient", gender="male"),
                 **{"Idempotency-Key": key})
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Idempotency-Key"]


def test_failed_request_is_not_remembered(server):
    key = uuid.uuid4().hex
    bad = sample("Patient", gender="sometimes")
    assert _post(server, "Patient", bad, **{"Idempotency-Key": key}).status_code == 400
    good = sample("Patient")
    assert _post(server, "Patient", good, **{"Idempotency-Key": key + "-2"}).status_code == 201


def test_update_and_delete_with_keys(server):
    pid = server.post("Patient", sample("Patient")).json()["id"]
    key = uuid.uuid4().hex
    body = json.dumps(sample("Patient", id=pid, gender="other"))
    headers = {"Content-Type": JSON, "Idempotency-Key": key}
    first = server.request("PUT", f"Patient/{pid}", data=body, headers=headers)
    again = server.request("PUT", f"Patient/{pid}", data=body, headers=headers)
    assert first.headers["ETag"] == again.headers["ETag"] == 'W/"2"'
    dkey = {"Idempotency-Key": uuid.uuid4().hex}
    assert server.request("DELETE", f"Patient/{pid}", headers=dkey).status_code == 200
    assert server.request("DELETE", f"Patient/{pid}", headers=dkey).headers[
        "Idempotent-Replayed"] == "true"


def test_bad_key_is_400(server):
    resp = _post(server, "Patient", sample("Patient"), **{"Idempotency-Key": "x" * 201})
    assert resp.status_code == 400


def referral_bundle(marker: str, *, conditional_everywhere: bool) -> dict:
    """The example referral package with fresh identifiers; optionally every entry a
    conditional create (the documented way to make a referral Bundle idempotent)."""
    bundle = json.loads((ROOT / "examples" / "referral-bundle-1.json").read_text())
    for entry in bundle["entry"]:
        resource, request = entry["resource"], entry["request"]
        ident = {"system": "urn:test:package", "value": f"{marker}-{resource['resourceType']}"}
        if "ifNoneExist" in request or conditional_everywhere:
            if resource["resourceType"] in ("Organization", "PractitionerRole"):
                continue  # shared directory entries: already conditional on their own ids
            single = resource["resourceType"] == "QuestionnaireResponse"  # 0..1 identifier
            resource["identifier"] = ident if single else [ident]
            request["ifNoneExist"] = f"identifier=urn:test:package|{ident['value']}"
    return bundle


def test_conditional_creates_make_a_referral_bundle_idempotent(server):
    marker = uuid.uuid4().hex[:10]
    bundle = referral_bundle(marker, conditional_everywhere=True)
    first = server.post("", bundle)
    assert first.status_code == 200, first.text
    again = server.post("", bundle)
    statuses = [e["response"]["status"] for e in again.json()["entry"]]
    assert all(s.startswith("200") for s in statuses), statuses
    first_ids = [e["response"]["location"].split("/_history")[0]
                 for e in first.json()["entry"]]
    again_ids = [e["response"]["location"].split("/_history")[0]
                 for e in again.json()["entry"]]
    assert first_ids == again_ids


# -- the kill test: gunicorn, SIGKILL, retry ---------------------------------------------
@pytest.fixture(scope="module")
def gunicorn(database):
    url = database.url.render_as_string(hide_password=False)
    init_db(url)
    server = start_server(url, workers=1, threads=2)
    yield server
    server.stop()


def big_transaction(marker: str, entries: int = 500) -> dict:
    """A referral package padded to `entries` entries with Observations whose narratives make
    the response (about 5 MB) larger than any socket buffer, so a worker killed after the
    commit has surely not finished sending it."""
    bundle = referral_bundle(marker, conditional_everywhere=False)
    patient = next(e["fullUrl"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")
    words = "Patient reports low mood and poor sleep; plan reviewed with the care team. " * 130
    while len(bundle["entry"]) < entries:
        obs = sample("Observation", subject={"reference": patient},
                     identifier=[{"system": "urn:test:obs", "value": marker}])
        obs["text"] = {"status": "generated",
                       "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{words}</div>'}
        bundle["entry"].append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": obs,
                                "request": {"method": "POST", "url": "Observation"}})
    return bundle


def _observations_with(database, marker: str) -> int:
    from fhir_server.storage.index_schema import idx_token

    with database.read() as conn:
        return conn.execute(select(func.count()).select_from(idx_token).where(
            idx_token.c.res_type == "Observation", idx_token.c.param == "identifier",
            idx_token.c.code == marker)).scalar_one()


def _send_without_reading(port: int, body: bytes, key: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
    sock.connect(("127.0.0.1", port))
    head = (f"POST /fhir HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: {JSON}\r\n"
            f"Accept: {JSON}\r\nIdempotency-Key: {key}\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body)
    return sock


def _read_all(sock: socket.socket) -> bytes:
    sock.settimeout(30)
    data = b""
    try:
        while chunk := sock.recv(1 << 20):
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    return data


def _retry(port: int, body: bytes, key: str) -> requests.Response:
    """What a client does after a lost response: send the same request again until the
    server (its worker restarted by gunicorn) answers."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return requests.post(f"http://127.0.0.1:{port}/fhir", data=body, timeout=120,
                                 headers={"Content-Type": JSON, "Idempotency-Key": key})
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_killed_worker_after_commit_retry_does_not_duplicate(gunicorn, database):
    marker = uuid.uuid4().hex[:12]
    body = json.dumps(big_transaction(marker)).encode()
    patients_before = _count(database, "Patient")
    key = f"referral-{marker}"
    sock = _send_without_reading(gunicorn.port, body, key)
    deadline = time.monotonic() + 240
    while _observations_with(database, marker) == 0:  # committed: visible to others
        assert time.monotonic() < deadline, "the transaction never committed"
        time.sleep(0.02)
    (worker,) = gunicorn_workers(gunicorn)
    import os
    import signal

    os.kill(worker, signal.SIGKILL)
    partial = _read_all(sock)
    head, _, received = partial.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]) \
        if b"content-length:" in head.lower() else None
    assert length is None or len(received) < length, "the response was not lost"
    retried = _retry(gunicorn.port, body, key)
    assert retried.status_code == 200, retried.text[:500]
    assert retried.headers.get("Idempotent-Replayed") == "true"
    response = retried.json()
    assert response["type"] == "transaction-response" and len(response["entry"]) == 500
    assert _observations_with(database, marker) == 491
    assert _count(database, "Patient") == patients_before + 1
    # the replayed response names the resources that exist
    task = next(e for e in response["entry"] if e["response"]["location"].startswith("Task/"))
    task_id = task["response"]["location"].split("/")[1]
    got = requests.get(f"http://127.0.0.1:{gunicorn.port}/fhir/Task/{task_id}", timeout=30)
    assert got.status_code == 200
