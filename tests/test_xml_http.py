"""FHIR XML over HTTP: every interaction family in XML on the live server, both databases.

Content negotiation (Accept, _format, Content-Type; 406/415), mixed requests (XML in, JSON
out and the reverse), hostile XML bodies (400/413 OperationOutcome, database unchanged) and
Subscription notifications whose channel.payload is application/fhir+xml.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from fhir_server.formats import json_to_xml, xml_to_json
from tests.live import assert_valid_fhir
from tests.samples import sample
from tests.snapshot import db_snapshot

pytestmark = pytest.mark.usefixtures("sample_world")

XML = "application/fhir+xml"
JSON = "application/fhir+json"
XML_IO = {"Accept": XML, "Content-Type": XML}
MAX = 50 * 1024 * 1024


def from_xml(response: requests.Response, *, schema: bool = True) -> dict[str, Any]:
    """The XML body as a FHIR JSON tree, checked against the R4 JSON schema."""
    assert response.headers["Content-Type"].startswith(XML), response.headers
    assert response.content.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    body = xml_to_json(response.content, max_bytes=MAX)
    if schema:
        assert_valid_fhir(json.loads(json.dumps(body, default=float)))
    if response.status_code >= 400:
        assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    return body


def xml(server, method: str, path: str, body: dict | bytes | None = None,
        **headers: str) -> requests.Response:
    """A request with an XML body (a JSON tree is converted) asking for XML."""
    data = json_to_xml(body) if isinstance(body, dict) else body
    return server.request(method, path, data=data, headers={**XML_IO, **headers})


def patient(**changes: Any) -> dict:
    body = sample("Patient", **changes)
    body.pop("id", None)
    return body


# ---------------------------------------------------------------- every interaction in XML

def test_create_read_vread_update_patch_delete_history(server) -> None:
    created = xml(server, "POST", "Patient", patient())
    assert created.status_code == 201
    body = from_xml(created)
    pid = body["id"]
    assert created.headers["Location"].endswith(f"/Patient/{pid}/_history/1")
    assert created.headers["ETag"] == 'W/"1"'

    read = xml(server, "GET", f"Patient/{pid}")
    assert read.status_code == 200 and from_xml(read) == body
    assert from_xml(xml(server, "GET", f"Patient/{pid}/_history/1")) == body

    changed = dict(body, gender="other")
    updated = xml(server, "PUT", f"Patient/{pid}", changed, **{"If-Match": 'W/"1"'})
    assert updated.status_code == 200
    assert from_xml(updated)["gender"] == "other" and updated.headers["ETag"] == 'W/"2"'

    # JSON Patch stays JSON on the way in; the response follows Accept.
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    patched = server.request("PATCH", f"Patient/{pid}", data=json.dumps(ops),
                             headers={"Content-Type": "application/json-patch+json",
                                      "Accept": XML})
    assert patched.status_code == 200 and from_xml(patched)["gender"] == "female"
    xml_patch = xml(server, "PATCH", f"Patient/{pid}", patient())
    assert xml_patch.status_code == 415 and from_xml(xml_patch)

    history = from_xml(xml(server, "GET", f"Patient/{pid}/_history"))
    assert history["type"] == "history" and history["total"] == 3
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["3", "2", "1"]
    assert from_xml(xml(server, "GET", "Patient/_history?_count=2"))["type"] == "history"
    assert from_xml(xml(server, "GET", "_history?_count=2"))["type"] == "history"

    deleted = xml(server, "DELETE", f"Patient/{pid}")
    assert deleted.status_code == 200
    gone = xml(server, "GET", f"Patient/{pid}")
    assert gone.status_code == 410 and from_xml(gone)["resourceType"] == "OperationOutcome"


def test_search_get_and_post_form(server) -> None:
    family = "Xml" + uuid.uuid4().hex[:8]
    for _ in range(3):
        assert xml(server, "POST", "Patient", patient(name=[{"family": family}])).status_code == 201
    bundle = from_xml(xml(server, "GET", f"Patient?family={family}&_count=2"))
    assert bundle["type"] == "searchset" and bundle["total"] == 3 and len(bundle["entry"]) == 2
    assert {"self", "next"} <= {link["relation"] for link in bundle["link"]}
    # POST _search keeps reading form bodies; the response is XML by _format or Accept.
    form = server.request("POST", "Patient/_search?_format=xml", data={"family": family})
    assert form.status_code == 200 and from_xml(form)["total"] == 3
    form = server.request("POST", "Patient/_search", data={"family": family},
                          headers={"Accept": "application/xml"})
    assert from_xml(form)["total"] == 3


def test_transaction_and_batch_in_and_out(server) -> None:
    pat_url = "urn:uuid:" + str(uuid.uuid4())
    task = sample("Task")
    task.pop("id", None)
    entries = [{"fullUrl": pat_url, "resource": patient(),
                "request": {"method": "POST", "url": "Patient"}},
               {"resource": sample("Observation", subject={"reference": pat_url}),
                "request": {"method": "POST", "url": "Observation"}}]
    tx = xml(server, "POST", "", {"resourceType": "Bundle", "type": "transaction",
                                  "entry": entries})
    assert tx.status_code == 200, tx.text
    out = from_xml(tx)
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"][:3] for e in out["entry"]] == ["201", "201"]
    pid = out["entry"][0]["response"]["location"].split("/")[1]
    observation = out["entry"][1]["resource"]
    assert observation["subject"]["reference"] == f"Patient/{pid}"

    batch = xml(server, "POST", "", {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {"request": {"method": "GET", "url": "Patient/no-such-patient"}}]})
    out = from_xml(batch)
    assert out["type"] == "batch-response"
    assert out["entry"][0]["resource"]["id"] == pid
    assert out["entry"][1]["response"]["status"].startswith("404")
    assert out["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_failed_xml_transaction_changes_nothing(server) -> None:
    before = db_snapshot(server.database)
    bad = xml(server, "POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "DELETE", "url": "Patient/missing"}},
        {"resource": patient(), "request": {"method": "PUT", "url": "Patient/x"},
         "fullUrl": "urn:uuid:" + str(uuid.uuid4())},
        {"resource": patient(), "request": {"method": "PUT", "url": "Patient/x"}}]})
    assert 400 <= bad.status_code < 500 and from_xml(bad)["resourceType"] == "OperationOutcome"
    assert db_snapshot(server.database) == before


def test_validate_with_xml_parameters(server) -> None:
    params = {"resourceType": "Parameters", "parameter": [{"name": "resource",
                                                           "resource": patient()}]}
    ok = xml(server, "POST", "Patient/$validate", params)
    assert ok.status_code == 200
    assert from_xml(ok)["resourceType"] == "OperationOutcome"
    broken = patient(gender="not-a-gender")
    outcome = xml(server, "POST", "Patient/$validate", broken)
    body = from_xml(outcome)
    errors = [i for i in body["issue"] if i["severity"] in ("error", "fatal")]
    assert errors and any("gender" in " ".join(i.get("expression", [])) for i in errors), body


def test_capability_statement_lists_both_formats(server) -> None:
    # ~1 MB: compared with the JSON form, which the client schema-checks.
    cap = from_xml(xml(server, "GET", "metadata"), schema=False)
    assert cap["resourceType"] == "CapabilityStatement"
    assert {"application/fhir+xml", "application/fhir+json"} <= set(cap["format"])
    assert cap == server.get("metadata").json()


@pytest.fixture(scope="module")
def pid(server) -> str:
    """A Patient to read in the negotiation tests."""
    return server.post("Patient", patient()).json()["id"]


def test_errors_are_xml_operation_outcomes(server) -> None:
    missing = xml(server, "GET", "Patient/does-not-exist")
    assert missing.status_code == 404 and from_xml(missing)
    unknown = xml(server, "GET", "NotAType/1")
    assert unknown.status_code == 404 and from_xml(unknown)
    bad_param = xml(server, "GET", "Patient?no-such-param=1", Prefer="handling=strict")
    assert bad_param.status_code == 400
    assert from_xml(bad_param)["issue"][0]["expression"] == ["no-such-param"]
    element = xml(server, "POST", "Patient",
                  b'<Patient xmlns="http://hl7.org/fhir"><colour value="blue"/></Patient>')
    assert element.status_code == 400
    assert from_xml(element)["issue"][0]["expression"] == ["Patient.colour"]
    value = xml(server, "POST", "Patient",
                b'<Patient xmlns="http://hl7.org/fhir"><active value="yes"/></Patient>')
    assert value.status_code == 400
    assert from_xml(value)["issue"][0]["expression"] == ["Patient.active"]
    mismatch = xml(server, "POST", "Patient", sample("Observation"))
    assert mismatch.status_code == 400 and from_xml(mismatch)
    created = from_xml(xml(server, "POST", "Patient", patient()))
    conflict = xml(server, "PUT", f"Patient/{created['id']}", created, **{"If-Match": 'W/"9"'})
    assert conflict.status_code == 412 and from_xml(conflict)
    method = xml(server, "DELETE", "metadata")
    assert method.status_code == 405 and from_xml(method)


# ---------------------------------------------------------------- negotiation

@pytest.mark.parametrize("fmt", ["xml", "text/xml", "application/xml", "application/fhir+xml",
                                 "application/fhir xml", "application/xml+fhir",
                                 "application/fhir+xml;fhir-version=4.0"])
def test_format_parameter_xml_forms(server, pid: str, fmt: str) -> None:
    response = server.get(f"Patient/{pid}", params={"_format": fmt}, headers={"Accept": JSON})
    assert response.status_code == 200
    assert from_xml(response)["id"] == pid


@pytest.mark.parametrize("fmt", ["json", "text/json", "application/json", "application/fhir+json"])
def test_format_parameter_json_forms(server, pid: str, fmt: str) -> None:
    response = server.get(f"Patient/{pid}", params={"_format": fmt}, headers={"Accept": XML})
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(JSON)
    assert response.json()["id"] == pid


@pytest.mark.parametrize(("accept", "expected"), [
    (XML, XML), ("application/xml", XML), ("text/xml", XML), (JSON, JSON),
    ("application/json", JSON), ("*/*", JSON), ("", JSON),
    ("application/fhir+json;q=0.5, application/fhir+xml", XML),
    ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", XML),
])
def test_accept_header(server, pid: str, accept: str, expected: str) -> None:
    response = server.get(f"Patient/{pid}", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(expected)


@pytest.mark.parametrize(("headers", "params"), [
    ({"Accept": "application/x-yaml"}, {}),
    ({"Accept": "application/fhir+xml;fhir-version=3.0"}, {}),
    ({}, {"_format": "yaml"}),
    ({"Accept": XML}, {"_format": "turtle"}),
])
def test_406_for_formats_we_cannot_serve(server, pid: str, headers: dict,
                                        params: dict) -> None:
    response = server.get(f"Patient/{pid}", headers=headers, params=params)
    assert response.status_code == 406
    assert response.json()["issue"][0]["code"] == "not-supported"


@pytest.mark.parametrize("content_type", ["application/x-yaml", "text/plain",
                                          "application/fhir+xml; charset=utf-16",
                                          "application/fhir+xml; fhir-version=3.0"])
def test_415_for_bodies_we_cannot_read(server, content_type: str) -> None:
    before = db_snapshot(server.database)
    response = server.request("POST", "Patient", data=json_to_xml(patient()),
                              headers={"Content-Type": content_type, "Accept": XML})
    assert response.status_code == 415 and from_xml(response)
    assert db_snapshot(server.database) == before


def test_mixed_requests(server) -> None:
    # XML in, JSON out (no Accept: JSON is the default).
    created = server.request("POST", "Patient", data=json_to_xml(patient(gender="male")),
                             headers={"Content-Type": XML, "Accept": ""})
    assert created.status_code == 201 and created.headers["Content-Type"].startswith(JSON)
    body = created.json()
    assert body["gender"] == "male"
    # JSON in, XML out.
    updated = server.request("PUT", f"Patient/{body['id']}",
                             data=json.dumps(dict(body, gender="female")),
                             headers={"Content-Type": JSON, "Accept": XML})
    assert updated.status_code == 200 and from_xml(updated)["gender"] == "female"
    # XML in, JSON out by _format; the stored resource reads the same in both formats.
    again = server.request("PUT", f"Patient/{body['id']}?_format=json",
                           data=json_to_xml(dict(body, gender="unknown")),
                           headers={"Content-Type": "application/xml", "Accept": XML})
    assert again.headers["Content-Type"].startswith(JSON) and again.json()["gender"] == "unknown"
    as_json = server.get(f"Patient/{body['id']}").json()
    as_xml = from_xml(server.get(f"Patient/{body['id']}", headers={"Accept": XML}))
    assert as_xml == as_json


def test_round_trip_over_http_keeps_content(server) -> None:
    obs = sample("Observation", valueQuantity={"value": 12.5, "unit": "{score}"},
                 extension=[{"url": "http://example.org/x", "valueDecimal": 0.25}],
                 text={"status": "generated",
                       "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>a<br/>b</p></div>'},
                 _status={"extension": [{"url": "http://example.org/s", "valueCode": "x"}]})
    obs.pop("id", None)
    obs.pop("valueInteger", None)
    created = xml(server, "POST", "Observation", obs)
    assert created.status_code == 201
    stored = from_xml(created)
    assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == obs
    as_json = server.get(f"Observation/{stored['id']}").json()
    assert from_xml(xml(server, "GET", f"Observation/{stored['id']}")) == as_json == stored


# ---------------------------------------------------------------- hostile XML

_P = b'<Patient xmlns="http://hl7.org/fhir">'
HOSTILE = {
    "xxe-file": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                + _P + b'<gender value="&x;"/></Patient>',
    "xxe-network": b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM '
                   b'"http://127.0.0.1:9/secret">]>' + _P + b'<gender value="&x;"/></Patient>',
    "xxe-parameter-entity": b'<!DOCTYPE p [<!ENTITY % r SYSTEM "http://127.0.0.1:9/e.dtd"> %r;]>'
                            + _P + b'</Patient>',
    "xxe-utf16": ('<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE p [<!ENTITY x SYSTEM '
                  '"file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><gender '
                  'value="&x;"/></Patient>').encode("utf-16"),
    "billion-laughs": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "lol">'
                      + b"".join(b'<!ENTITY %c "&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;&%c;">'
                                 % ((98 + i,) + (97 + i,) * 10) for i in range(9))
                      + b"]>" + _P + b'<gender value="&j;"/></Patient>',
    "undeclared-entity": _P + b'<gender value="&x;"/></Patient>',
    "deep-nesting": _P + b'<extension url="u">' * 300 + b"</extension>" * 300 + b"</Patient>",
    "deep-fhir-nesting": _P + b'<extension url="u">' * 140 + b"</extension>" * 140
                         + b"</Patient>",
    "huge-attribute": _P + b'<name><family value="' + b"a" * 10_100_000 + b'"/></name>'
                      b"</Patient>",
    "many-attributes": b'<Patient xmlns="http://hl7.org/fhir" '
                       + b" ".join(b'a%d="x"' % i for i in range(50_000)) + b"/>",
    "huge-name": _P + b"<" + b"n" * 60_000 + b' value="x"/></Patient>',
    "not-well-formed": _P + b'<gender value="male">',
    "no-namespace": b'<Patient><gender value="male"/></Patient>',
    "text-content": _P + b"<gender>male</gender></Patient>",
    "processing-and-cdata": _P + b'<gender value="male"/><![CDATA[x]]></Patient>',
    "too-big": _P + b"<!--" + b"x" * (11 * 1024 * 1024) + b"-->" + b"</Patient>",
}


def test_hostile_xml_is_refused_and_changes_nothing(server) -> None:
    before = db_snapshot(server.database)
    for name, body in HOSTILE.items():
        for path in ("Patient", ""):  # a resource, and the same as a (non-)Bundle
            started = time.perf_counter()
            response = xml(server, "POST", path, body)
            assert response.status_code in (400, 413), (name, response.status_code)
            outcome = from_xml(response)
            text = json.dumps(outcome)
            assert "root:" not in text and len(text) < 20_000, name  # no file content
            assert time.perf_counter() - started < 10, name
    transaction = xml(server, "POST", "", b'<Bundle xmlns="http://hl7.org/fhir"><type '
                      b'value="transaction"/><entry><resource>' + HOSTILE["xxe-file"]
                      + b"</resource></entry></Bundle>")
    assert transaction.status_code == 400 and from_xml(transaction)
    assert db_snapshot(server.database) == before


# ---------------------------------------------------------------- stored content

def test_invalid_content_is_refused_and_legacy_content_is_still_served(server) -> None:
    odd = patient(name=[{"family": "a\u0001b"}],
                  text={"status": "generated", "div": "<div>no namespace</div>"})
    refused = server.post("Patient", odd)
    assert refused.status_code == 400  # base validation: no control characters, XHTML div
    from fhir_server.storage.repository import Repository

    with server.database.write() as conn:  # content stored before those rules existed
        stored = Repository(conn).create(odd)
    read = server.get(f"Patient/{stored.res_id}", headers={"Accept": XML})
    assert read.status_code == 200
    assert from_xml(read)["name"] == [{"family": "a\ufffdb"}]


# ---------------------------------------------------------------- subscription notifications

class XmlReceiver:
    """A loopback rest-hook endpoint recording raw bodies and content types."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.received.append((self.headers.get("Content-Type", ""), raw))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_subscription_with_xml_payload_gets_xml_notifications(server) -> None:
    from subscriptions.worker import Worker
    from tests.test_subscriptions_delivery import fast_config
    from tests.test_subscriptions_outbox import write_task
    from tests.test_subscriptions_pure import sub

    receiver = XmlReceiver()
    org = uuid.uuid4().hex[:8]
    body = sub(filters=(f"requester=Organization/{org}",), endpoint=receiver.url,
               payload=XML)
    body["channel"]["extension"] = []
    created = xml(server, "POST", "Subscription", body)  # the Subscription itself in XML
    assert created.status_code == 201, created.text
    sid = from_xml(created)["id"]
    write_task(server.database, f"tx-{org}", org)
    stop = threading.Event()
    worker = threading.Thread(target=Worker(server.database, fast_config()).run, args=(stop,))
    worker.start()
    try:
        deadline = time.time() + 15
        while time.time() < deadline and len(receiver.received) < 2:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(10)
        receiver.stop()
    assert len(receiver.received) >= 2, receiver.received
    kinds = []
    for content_type, raw in receiver.received:
        assert content_type.startswith(XML)
        bundle = xml_to_json(raw, max_bytes=MAX)
        assert_valid_fhir(bundle)
        assert bundle["type"] == "history"
        status = bundle["entry"][0]["resource"]
        assert status["resourceType"] == "Parameters"
        params = {p["name"]: p for p in status["parameter"]}
        assert params["subscription"]["valueReference"]["reference"].endswith(f"/{sid}")
        kinds.append(params["type"]["valueCode"])
    assert kinds[:2] == ["handshake", "event-notification"]
