"""Hostile input: the ten inputs a fuzzing probe once turned into 500s (issue 23), and the
limits that keep such input a 4xx. Every answer is an OperationOutcome naming what was
wrong (an `expression`), and nothing is written."""

from __future__ import annotations

import json
import socket
import time

import pytest

from fhir_server.app import create_app
from fhir_server.config import Settings
from fhir_server.seed import seed_definitions
from tests.live import FhirHttp, LiveServer
from tests.samples import sample
from tests.snapshot import db_snapshot
from tests.test_screening_http import qr_for

JSON = "application/fhir+json"
PARAMETERS_NOT_A_LIST = {"resourceType": "Parameters", "parameter": "x"}


def _error(resp, status: int | tuple[int, ...]) -> dict:
    """The response's first issue, after checking the status and the expression."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, resp.text[:500]
    body = resp.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["expression"] and all(issue["expression"]), issue
    return issue


def _raw(server, method: str, path: str, data: bytes | str, ctype: str = JSON):
    return server.request(method, path, data=data, headers={"Content-Type": ctype})


@pytest.fixture()
def unchanged(server):
    """Asserts that the test's requests wrote nothing."""
    before = db_snapshot(server.database)
    yield
    assert db_snapshot(server.database) == before


# 1. A Parameters whose `parameter` is not a list, posted to every operation that reads one.
@pytest.mark.parametrize("path", ["Patient/$validate", "HealthcareService/$match",
                                  "QuestionnaireResponse/$extract", "Task/abc/$redirect",
                                  "ServiceRequest/abc/$match"])
def test_parameters_that_is_not_a_list(server, unchanged, path):
    issue = _error(server.post(path, PARAMETERS_NOT_A_LIST), 400)
    assert issue["expression"] == ["Parameters.parameter"]


def test_operation_body_that_is_not_a_resource(server, unchanged):
    issue = _error(_raw(server, "POST", "Patient/$validate", b"[1, 2]"), 400)
    assert issue["expression"] == ["Parameters"]


# 2. JSON nested 1,000 deep in an unknown element.
def test_json_nested_too_deep(server, unchanged):
    deep = '{"resourceType":"Patient","foo":' + '{"a":' * 1000 + "1" + "}" * 1000 + "}"
    issue = _error(_raw(server, "POST", "Patient", deep), 400)
    assert issue["expression"][0].startswith("Patient")
    # just past the limit: the expression points at the element
    limit = Settings().max_json_depth
    nested = '{"resourceType":"Patient","foo":' + '{"a":' * limit + "1" + "}" * limit + "}"
    issue = _error(_raw(server, "POST", "Patient", nested), 400)
    assert issue["expression"][0].startswith("Patient.foo.a.a")


# 3. A Bundle nested 250 deep in a transaction entry.
def test_bundle_nested_in_transaction_entry(server, unchanged):
    inner: dict = {"resourceType": "Patient"}
    for _ in range(250):
        inner = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": inner}]}
    tx = {"resourceType": "Bundle", "type": "transaction",
          "entry": [{"request": {"method": "POST", "url": "Bundle"}, "resource": inner}]}
    issue = _error(server.post("", tx), 400)
    assert issue["expression"][0].startswith("Bundle.entry[0].resource.entry[0]")


# 4. PATCH replace /meta with null.
def test_patch_meta_to_null(server):
    pid = server.post("Patient", sample("Patient")).json()["id"]
    before = db_snapshot(server.database)
    issue = _error(server.patch(f"Patient/{pid}", [{"op": "replace", "path": "/meta",
                                                     "value": None}]), (400, 422))
    assert issue["expression"] == ["Patient.meta"]
    assert db_snapshot(server.database) == before


def test_null_member_in_a_resource(server, unchanged):
    issue = _error(server.post("Patient", {**sample("Patient"), "gender": None}), 400)
    assert issue["expression"] == ["Patient.gender"]


# 6. A search chained four deep (SQLite once failed with "parser stack overflow").
def test_chain_too_deep(server, unchanged):
    recorded = "part-of:Task.part-of:Task.part-of:Task.part-of:Task.part-of"
    resp = server.get(f"Task?{recorded}=x")  # SQLite cannot parse it: 400, never a 500
    if resp.status_code != 200:
        issue = _error(resp, 400)
        assert issue["code"] == "too-costly" and issue["expression"] == [recorded]
    five = "part-of:Task." * 5 + "part-of"
    issue = _error(server.get(f"Task?{five}=x"), 400)
    assert issue["expression"] == [five] and "chain too deep" in issue["diagnostics"]
    has = "_has:Task:patient:" + "_has:Task:part-of:" * 4 + "status"
    _error(server.get(f"Patient?{has}=x"), 400)


def test_chain_too_deep_for_the_database_in_a_conditional_create(server, sample_world):
    """The fuzz input (FUZZ_SEED=4031431243) that SQLite could not parse in If-None-Exist."""
    recorded = "part-of:Task.part-of:Task.part-of:Task.part-of:Task.part-of"
    resp = server.post("Observation", sample("Observation"),
                       headers={"If-None-Exist": f"{recorded}=x"})
    if resp.status_code != 201:  # PostgreSQL runs it (no match: created); SQLite cannot
        assert _error(resp, 400)["code"] == "too-costly"


def test_chain_at_the_limit_runs_on_every_database(server, sample_world):
    root = server.post("Task", sample("Task")).json()["id"]
    parent = root
    for _ in range(3):
        parent = server.post("Task", sample("Task", partOf=[{"reference": f"Task/{parent}"}])
                             ).json()["id"]
    three = "part-of:Task.part-of:Task.part-of:Task._id"
    bundle = server.get(f"Task?{three}={root}").json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == [parent]


def test_too_many_search_values(server, unchanged):
    values = ",".join(str(i) for i in range(1200))
    issue = _error(server.get(f"Patient?_id={values}"), 400)
    assert issue["code"] == "too-costly" and issue["expression"] == ["_id"]


# A control character in a path, a search value or conditional criteria (fuzz seed
# 2032590246: `ServiceRequest?subject.identifier=...|MRN-1/%00` was a 500 on PostgreSQL,
# which cannot compare a text holding U+0000).
@pytest.mark.parametrize(("path", "expression"), [
    ("ServiceRequest?subject.identifier=http://x|MRN-1/%00", "subject.identifier"),
    ("Patient?name=a%00b", "name"),
    ("Patient?identifier=http://x|a%01", "identifier"),
    ("Patient?_id=a%00", "_id"),
    ("Patient?_has:Task:patient:owner=Organization/x%1F", "_has:Task:patient:owner"),
    ("Patient/_history?_since=2020%00", "_since"),
    ("Patient/a%00b", "Patient.id"),
    ("Patient/a%00b/_history/1", "Patient.id"),
])
def test_control_characters_in_the_url(server, unchanged, path, expression):
    issue = _error(server.get(path), 400)
    assert issue["code"] == "invalid" and issue["expression"] == [expression]


def test_control_characters_in_conditional_criteria(server, unchanged):
    header = {"If-None-Exist": "identifier=a%00b"}
    issue = _error(server.post("Patient", sample("Patient"), headers=header), 400)
    assert issue["expression"] == ["identifier"]
    _error(server.put("Patient?identifier=a%00b", sample("Patient")), 400)
    _error(server.delete("Patient?identifier=a%00b"), 400)
    entry = {"request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=x%00"},
             "resource": sample("Patient"), "fullUrl": "urn:uuid:6f0c8f9e-0f57-4d4e-9d8e-1d1b"
                                                       "7f6c2a11"}
    issue = _error(server.post("", {"resourceType": "Bundle", "type": "transaction",
                                    "entry": [entry]}), 400)
    assert "If-None-Exist parameter 'identifier'" in issue["diagnostics"]
    # tab, line feed and carriage return may be in a FHIR string: searched, not refused
    assert server.get("Patient?name=a%09b").status_code == 200


# 7. A version id beyond 64 bits.
def test_history_version_overflow(server):
    pid = server.post("Patient", sample("Patient")).json()["id"]
    before = db_snapshot(server.database)
    issue = _error(server.get(f"Patient/{pid}/_history/99999999999999999999"), 404)
    assert issue["expression"] == ["Patient.meta.versionId"]
    _error(server.get("Patient/_history?_count=" + "9" * 5000), 400)
    _error(server.get("Patient/_history?_count=²"), 400)
    _error(server.get("Patient/_history?_since=99999-01-01T00:00:00Z"), 400)
    resp = server.put(f"Patient/{pid}", sample("Patient", id=pid),
                      headers={"If-Match": 'W/"99999999999999999999"'})
    assert resp.status_code in (400, 412), resp.text
    assert db_snapshot(server.database) == before


# 8. A PHQ-9 QuestionnaireResponse with "authored": 123.
def test_phq9_with_numeric_authored(server):
    pid = server.post("Patient", sample("Patient")).json()["id"]
    qr = qr_for("phq-9", [1, 1, 1, 1, 1, 1, 1, 1, 0], f"Patient/{pid}")
    qr["authored"] = 123
    before = db_snapshot(server.database)
    issue = _error(server.post("QuestionnaireResponse", qr), (400, 422))
    assert issue["expression"] == ["QuestionnaireResponse.authored"]
    assert db_snapshot(server.database) == before


# 9. valueQuantity.value 1e400 as JSON, as XML and as a 400-digit number.
OBSERVATION = ('{"resourceType":"Observation","status":"final","code":{"text":"x"},'
               '"valueQuantity":{"value":%s}}')
XML_OBSERVATION = ('<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code>'
                   '<text value="x"/></code><valueQuantity><value value="%s"/></valueQuantity>'
                   '</Observation>')


@pytest.mark.parametrize("number", ["1e400", "-1E+400", "1.50e400", "9" * 400, "1e-400",
                                    "0." + "1" * 40])
def test_numbers_out_of_range(server, unchanged, number):
    issue = _error(_raw(server, "POST", "Observation", OBSERVATION % number), 400)
    assert issue["expression"] == ["Observation.valueQuantity.value"]
    issue = _error(_raw(server, "POST", "Observation", XML_OBSERVATION % number,
                        "application/fhir+xml"), 400)
    assert issue["expression"] == ["Observation.valueQuantity.value"]


def test_large_exact_numbers_are_kept(server):
    body = OBSERVATION % "12345678901234567890.50"
    created = _raw(server, "POST", "Observation", body)
    assert created.status_code == 201, created.text
    raw = server.get(f"Observation/{created.json()['id']}").text
    assert '"value":12345678901234567890.50' in raw.replace(" ", "")


# Duplicate keys, byte-order mark, bad encodings.
def test_duplicate_keys_are_refused(server, unchanged):
    body = '{"resourceType":"Patient","name":[{"family":"A","family":"B"}]}'
    issue = _error(_raw(server, "POST", "Patient", body), 400)
    assert issue["expression"] == ["Patient.name[0].family"]
    assert "twice" in issue["diagnostics"]


def test_byte_order_mark_is_accepted(server):
    body = b"\xef\xbb\xbf" + json.dumps(sample("Patient")).encode()
    resp = _raw(server, "POST", "Patient", body)
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("body", [b'{"resourceType":"Patient","gender":NaN}',
                                  b'{"resourceType":"Patient","gender":"\\ud800"}',
                                  b"\xff\xfe{\x00}\x00", b'{"resourceType":"Patient"'])
def test_not_json(server, unchanged, body):
    _error(_raw(server, "POST", "Patient", body), 400)


# 10. A batch of 200 `Patient?_revinclude=*&_include=*`: the cost budget.
@pytest.fixture(scope="module")
def budget_server(database):
    """A server whose budget is small enough to reach with a few resources."""
    settings = Settings.from_env(
        database_url=database.url.render_as_string(hide_password=False), auth_mode="off",
        max_included=5, max_rows_read=40)
    app = create_app(settings, db=database)
    seed_definitions(app.extensions["fhir_services"])
    live = LiveServer(app)
    client = FhirHttp(live.base)
    client.database = database
    for _ in range(3):
        pid = client.post("Patient", sample("Patient")).json()["id"]
        for _ in range(3):
            client.post("Observation", sample("Observation", subject={
                "reference": f"Patient/{pid}"}))
    yield client
    live.stop()


def test_wildcard_includes_over_the_budget(budget_server):
    issue = _error(budget_server.get("Patient?_revinclude=*&_include=*"), 422)
    assert issue["code"] == "too-costly" and issue["expression"] == ["_revinclude"]
    assert "instead of '*'" in issue["diagnostics"]
    # within the budget: fine
    ok = budget_server.get("Patient?_revinclude=*&_count=1")
    assert ok.status_code == 200


def test_batch_of_wildcard_searches(budget_server):
    entry = {"request": {"method": "GET", "url": "Patient?_revinclude=*&_include=*"}}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry] * 200}
    started = time.monotonic()
    resp = budget_server.post("", batch)
    assert time.monotonic() - started < 30
    assert resp.status_code == 200
    entries = resp.json()["entry"]
    assert len(entries) == 200 and len(resp.content) < 1_000_000
    for i, out in enumerate(entries):
        assert out["response"]["status"] == "422"
        issue = out["response"]["outcome"]["issue"][0]
        assert issue["code"] == "too-costly"
        assert issue["expression"] == [f"Bundle.entry[{i}]"]


def test_rows_read_budget_is_shared_by_a_batch(budget_server):
    entry = {"request": {"method": "GET", "url": "Observation?_count=9"}}
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [entry] * 6}
    statuses = [e["response"]["status"] for e in budget_server.post("", batch).json()["entry"]]
    # 40 rows: four pages of nine, then the budget is spent
    assert statuses[:4] == ["200 OK"] * 4 and statuses[4:] == ["422", "422"]


def test_time_budget(database):
    settings = Settings.from_env(
        database_url=database.url.render_as_string(hide_password=False), auth_mode="off",
        request_seconds=0.0)
    live = LiveServer(create_app(settings, db=database))
    try:
        issue = _error(FhirHttp(live.base).get("Patient?name=a"), 422)
        assert issue["code"] == "too-costly" and "s of database work" in issue["diagnostics"]
    finally:
        live.stop()


def test_statement_interrupted_at_the_deadline(database):
    """A statement that runs past the budget's time is stopped by the database (SQLite's
    progress handler, PostgreSQL's statement_timeout) and becomes a 422."""
    from sqlalchemy import text

    from fhir_server.budget import RequestBudget
    from fhir_server.errors import FhirError
    from fhir_server.storage.db import Database
    from fhir_server.storage.sql_limits import time_limited

    slow = text("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                "WHERE i < 100000000) SELECT count(*) FROM n")
    budget = RequestBudget(seconds=0.3)
    # as the server makes it: each PostgreSQL statement limited to the request's time
    limited = Database(database.url.render_as_string(hide_password=False),
                       statement_timeout=budget.seconds)
    started = time.monotonic()
    try:
        with pytest.raises(FhirError) as raised, limited.read() as conn:
            with time_limited(conn, budget, "_count"):
                conn.execute(slow).scalar()
    finally:
        limited.dispose()
    assert raised.value.status == 422 and raised.value.code == "too-costly"
    assert time.monotonic() - started < 5


# Conditional reference with no match: said so, not "more than one".
def test_conditional_reference_without_match(server, unchanged):
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "POST", "url": "Observation"},
        "resource": sample("Observation", subject={
            "reference": "Patient?identifier=http://nowhere|none"})}]}
    issue = _error(server.post("", tx), 404)
    assert "matched no resource" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[0].resource"]


def test_chunked_body_with_a_bad_chunk_size_on_werkzeug(server, unchanged):
    host, port = server.base.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/fhir+json\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"ZZZ\r\nabc\r\n0\r\n\r\n")
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 400")


@pytest.mark.parametrize("name", ["ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"])
def test_bundle_request_fields_that_are_not_strings_are_400(server, unchanged, name):
    """A transaction entry whose conditional header field is an object (fuzz seed
    1946241788 sent a Reference as ifNoneExist) is a 400 naming it, not a 500."""
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [{
        "resource": {"resourceType": "Patient"},
        "request": {"method": "POST", "url": "Patient", name: {"reference": "Patient/x"}}}]}
    issue = _error(server.post("", bundle), 400)
    assert issue["expression"] == [f"Bundle.entry[0].request.{name}"]
