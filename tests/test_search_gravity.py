"""The Gravity SDOHCC polling queries, on SQLite and PostgreSQL, with SQL statement counts."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from sqlalchemy import event

from fhir_server.interactions.search import search_bundle
from fhir_server.storage import write_buffer
from tests.search_fixtures import store, wipe

BASE = "http://fhir.example.org/fhir"


def _task(i: int, status: str, owner: str | None, focus: str, requester: str) -> dict:
    t = {"resourceType": "Task", "id": f"task-{i}", "status": status, "intent": "order",
         "focus": {"reference": focus}, "for": {"reference": "Patient/pat-1"},
         "requester": {"reference": requester},
         "meta": {"profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                              "SDOHCC-TaskForReferralManagement"]}}
    if owner:
        t["owner"] = {"reference": owner}
    return t


@pytest.fixture(scope="module")
def db(database):
    with database.write() as conn:
        wipe(conn)
        store(conn, {"resourceType": "Patient", "id": "pat-1", "name": [{"family": "Doe"}]})
        store(conn, {"resourceType": "Patient", "id": "pat-2", "name": [{"family": "Roe"}]})
        for org in ("cbo-1", "cbo-2", "clinic"):
            store(conn, {"resourceType": "Organization", "id": org, "name": org})
        store(conn, {"resourceType": "QuestionnaireResponse", "id": "qr-1",
                     "status": "completed", "subject": {"reference": "Patient/pat-1"}})
        for i in range(6):
            store(conn, {"resourceType": "ServiceRequest", "id": f"sr-{i}",
                         "status": "active" if i % 2 == 0 else "completed", "intent": "order",
                         "subject": {"reference": f"Patient/pat-{1 + i % 2}"},
                         "supportingInfo": [{"reference": "QuestionnaireResponse/qr-1"}]})
        statuses = ["requested", "received", "accepted", "in-progress", "completed",
                    "cancelled", "rejected", "on-hold", "failed", "draft"]
        for i, status in enumerate(statuses):
            owner = None if i % 3 == 0 else f"Organization/cbo-{1 + i % 2}"
            store(conn, _task(i, status, owner, f"ServiceRequest/sr-{i % 6}",
                              "Organization/clinic"))
        store(conn, {"resourceType": "Procedure", "id": "proc-1", "status": "completed",
                     "subject": {"reference": "Patient/pat-1"},
                     "basedOn": [{"reference": "ServiceRequest/sr-0"}]})
        for i, (score, date) in enumerate([(12, "2024-01-05"), (7, "2024-03-01"),
                                           (20, "2023-11-11")]):
            store(conn, {"resourceType": "Observation", "id": f"phq-{i}", "status": "final",
                         "code": {"coding": [{"system": "http://loinc.org",
                                              "code": "44261-6"}]},
                         "subject": {"reference": "Patient/pat-1"},
                         "effectiveDateTime": date, "valueInteger": score})
        store(conn, {"resourceType": "Observation", "id": "other", "status": "final",
                     "code": {"coding": [{"system": "http://loinc.org", "code": "1-8"}]},
                     "subject": {"reference": "Patient/pat-1"},
                     "effectiveDateTime": "2024-02-01"})
    return database


@contextmanager
def count_statements(engine):
    """Count SQL statements sent to the database inside the block."""
    seen: list[str] = []

    def _on(conn, cursor, statement, params, context, executemany):
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", _on)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _on)


def search(db, res_type, params, **kw):
    with db.read() as conn:
        return search_bundle(conn, res_type, params, base_url=BASE, strict=True, **kw)


def ids(bundle, mode="match"):
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def test_task_owner_since_last_poll(db):
    b = search(db, "Task", [("owner", "Organization/cbo-1")])
    owned = ids(b)
    assert owned and sorted(owned) == ["task-2", "task-4", "task-8"]
    assert b["total"] == 3
    newest = max(e["resource"]["meta"]["lastUpdated"] for e in b["entry"])
    after = search(db, "Task", [("owner", "Organization/cbo-1"), ("_lastUpdated", f"gt{newest}")])
    assert after["total"] == 0 and ids(after) == []
    before = search(db, "Task", [("owner", f"{BASE}/Organization/cbo-1"),
                                 ("_lastUpdated", "gt2000-01-01")])
    assert sorted(ids(before)) == sorted(owned)


def test_unowned_requested_tasks(db):
    b = search(db, "Task", [("owner:missing", "true"), ("status", "requested")])
    assert ids(b) == ["task-0"]
    b = search(db, "Task", [("owner:missing", "false"), ("status", "requested,received")])
    assert ids(b) == ["task-1"]


def test_tasks_by_id_with_focus(db):
    b = search(db, "Task", [("_id", "task-1,task-2"), ("_include", "Task:focus")])
    assert sorted(ids(b)) == ["task-1", "task-2"]
    assert sorted(ids(b, "include")) == ["sr-1", "sr-2"]
    urls = {e["fullUrl"] for e in b["entry"]}
    assert f"{BASE}/ServiceRequest/sr-1" in urls


def test_tasks_by_requester(db):
    b = search(db, "Task", [("requester", "Organization/clinic"), ("_count", "4")])
    assert b["total"] == 10 and len(ids(b)) == 4
    assert any(link["relation"] == "next" for link in b["link"])


def test_active_service_requests_with_supporting_info(db):
    b = search(db, "ServiceRequest", [("patient", "Patient/pat-1"), ("status", "active"),
                                      ("_include", "ServiceRequest:supporting-info")])
    assert sorted(ids(b)) == ["sr-0", "sr-2", "sr-4"]
    assert ids(b, "include") == ["qr-1"]


def test_procedure_based_on(db):
    assert ids(search(db, "Procedure", [("based-on", "ServiceRequest/sr-0")])) == ["proc-1"]
    assert ids(search(db, "Procedure", [("based-on", "ServiceRequest/sr-1")])) == []


def test_phq9_observations_newest_first(db):
    b = search(db, "Observation", [("patient", "Patient/pat-1"),
                                   ("code", "http://loinc.org|44261-6"), ("_sort", "-date")])
    assert ids(b) == ["phq-1", "phq-0", "phq-2"]


def test_task_output_gravity_parameter(db):
    with db.write() as conn:
        store(conn, {**_task(99, "completed", "Organization/cbo-1", "ServiceRequest/sr-0",
                             "Organization/clinic"),
                     "output": [{"type": {"text": "result"},
                                 "valueReference": {"reference": "Procedure/proc-1"}}]})
    try:
        b = search(db, "Task", [("output", "Procedure/proc-1"), ("_include", "Task:output")])
        assert ids(b) == ["task-99"] and ids(b, "include") == ["proc-1"]
    finally:
        from tests.search_fixtures import mark_deleted
        with db.write() as conn:
            mark_deleted(conn, "Task", "task-99")
    assert ids(search(db, "Task", [("output", "Procedure/proc-1")])) == []


@pytest.mark.parametrize("query,extra", [
    ([("owner", "Organization/cbo-1"), ("_lastUpdated", "gt2000-01-01")], 0),
    ([("owner:missing", "true"), ("status", "requested")], 1),  # sized: a broad code
    ([("_id", "task-1,task-2,task-3"), ("_include", "Task:focus")], 1),
    ([("requester", "Organization/clinic")], 0),
    ([("requester", "Organization/clinic"), ("_include", "Task:focus"),
      ("_include", "Task:owner"), ("_revinclude", "Provenance:target")], 3),
])
def test_statement_count_constant_in_results(db, query, extra):
    """One statement for the page, one for the total or the bodies, one per include
    parameter (a `_has` search, or one driven by a broad code such as a status, adds one
    sizing its driving lookup: the adaptive plan's gate)."""
    for count in ("1", "3", "10"):
        with db.read() as conn, count_statements(db.engine) as seen:
            search_bundle(conn, "Task", query + [("_count", count)], base_url=BASE,
                          strict=True)
        assert len(seen) == 2 + extra, seen


def test_index_writes_use_a_constant_number_of_statements(db):
    from fhir_server.storage.index_store import replace_index
    from fhir_server.storage.schema import resources

    def statements_for(n_codings: int) -> int:
        obs = {"resourceType": "Observation", "id": f"many-{n_codings}", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": str(i)}
                                   for i in range(n_codings)]},
               "subject": {"reference": "Patient/pat-1"}, "effectiveDateTime": "2024-01-01"}
        with db.write() as conn:
            pid = store(conn, obs)
            write_buffer.flush(conn)
            with count_statements(db.engine) as seen:
                replace_index(conn, pid, "Observation", obs)
            sent = len(seen) + write_buffer.pending_statements(conn)  # queued for one flush
            conn.execute(resources.delete().where(resources.c.pid == pid))
            from fhir_server.storage.index_store import delete_index
            delete_index(conn, pid)
        return sent

    assert 0 < statements_for(1) == statements_for(50) <= 16


def test_driving_lookup_is_a_pid_lookup(db):
    """The driving index lookup reaches resources by primary key: `pid IN (SELECT ...)` on
    SQLite (never compared with `= 1`, which would force a table scan), `pid =
    ANY(ARRAY(SELECT ...))` on PostgreSQL (read in pid order, stops at the page size)."""
    sent: list[tuple[str, object]] = []

    def _on(conn, cursor, statement, params, context, executemany):  # noqa: ANN001
        if statement.lstrip().upper().startswith("SELECT"):
            sent.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", _on)
    try:
        with db.read() as conn:
            search_bundle(conn, "Task", [("requester", "Organization/clinic"),
                                         ("_total", "none")], base_url=BASE, strict=True)
    finally:
        event.remove(db.engine, "before_cursor_execute", _on)
    ((page, params),) = sent
    if db.is_sqlite:
        assert "r.pid IN (SELECT" in page and ") = 1" not in page, page
        with db.read() as conn:
            plan = " ".join(str(row) for row in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + page, params).all())
        assert "SEARCH r USING INTEGER PRIMARY KEY" in plan, plan
    else:
        assert "r.pid = ANY(ARRAY(SELECT" in page, page


def test_default_total_is_bounded(db):
    """Without `_total`: exact up to 100 matches (from the page query), absent above;
    `_total=accurate` always counts."""
    with db.write() as conn:
        for i in range(105):
            store(conn, {"resourceType": "Basic", "id": f"bulk-{i}",
                         "code": {"coding": [{"system": "http://x", "code": "big"}]},
                         "subject": {"reference": f"Patient/pat-{1 if i < 40 else 2}"}})
    broad = search(db, "Basic", [("code", "big"), ("_count", "5")])
    assert "total" not in broad and len(broad["entry"]) == 5
    assert search(db, "Basic", [("code", "big"), ("_total", "accurate")])["total"] == 105
    narrow = search(db, "Basic", [("subject", "Patient/pat-1"), ("_count", "5")])
    assert narrow["total"] == 40 and len(narrow["entry"]) == 5
    nxt = [link["url"] for link in narrow["link"] if link["relation"] == "next"]
    assert nxt, narrow["link"]
