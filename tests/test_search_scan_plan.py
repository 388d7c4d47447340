"""Differential test of the adaptive search plan: a page found by walking a type in pid order
with every filter as a probe (`ScanPlan`, fhir_server/storage/search_sql.py) must be exactly
the page the plain plan finds by materialising the driving set: same matches in the same
order, same total, same paging cursors, on every page forwards and backwards, for open and
access-restricted callers, on a generated referral population (both databases).

The scan (used for `_has` searches with many sources and for searches driven by a broad
code) has its thresholds scaled down so that a population of a few hundred resources takes
every path: the gate refusing, a window that ends short of a page (back to the plain plan),
a window that holds the page, a window that reaches the end of the type, an empty type.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from fhir_server.auth.context import AccessContext
from fhir_server.auth.scopes import parse_scopes
from fhir_server.config import Settings
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.search.parser import parse_search
from fhir_server.storage.repository import Repository
from fhir_server.storage.schema import resources
from fhir_server.storage.search_sql import (
    ScanPlan,
    SearchResult,
    _scan_page,
    _scan_worthwhile,
    execute_search,
)
from fhir_server.wiring import build_services

BASE = "http://fhir.test/fhir"
ORGS = ("o1", "o2", "o3")
STATUSES = ("requested", "accepted", "in-progress", "completed")

#: the plain plan (None) against scans that give up at once, often, or never (also tried
#: when the driving set is empty)
PLANS = [ScanPlan(min_driving=1, rows_per_match=1), ScanPlan(min_driving=2, rows_per_match=3),
         ScanPlan(min_driving=0, rows_per_match=10_000)]

QUERIES = [
    ("Task", [("owner:missing", "true"), ("status", "requested")]),
    ("Task", [("status", "requested")]),
    ("Task", [("status", "accepted")]),
    ("Task", [("owner:missing", "true"), ("status", "completed")]),  # no match
    ("Task", [("owner:missing", "false"), ("status", "requested,in-progress")]),
    ("Task", [("owner", "Organization/o1")]),
    ("Task", [("status", "requested"), ("_lastUpdated", "gt2000-01-01")]),
    ("Patient", [("_has:Task:patient:status", "requested")]),
    ("Patient", [("_has:Task:patient:status", "completed")]),
    ("Patient", [("_has:Task:patient:owner", "Organization/o2")]),
    ("Patient", [("_has:Task:patient:status", "requested"), ("gender", "female")]),
    ("Patient", [("gender", "male")]),
    ("Goal", [("lifecycle-status", "active")]),  # an empty type
]


def _ref(target: str) -> dict:
    return {"reference": target}


@pytest.fixture(scope="module")
def world(database):
    """Patients of three organizations with referral Tasks in every status (a large share
    requested and unowned, like the risk Tasks of screening), some deleted."""
    settings = Settings.from_env(
        database_url=database.url.render_as_string(hide_password=False), base_url=BASE)
    services = build_services(settings, database)
    rng = random.Random(21)
    with database.write() as conn:
        for o in ORGS:
            Repository(conn).create({"resourceType": "Organization", "id": o, "name": o},
                                    res_id=o, method="PUT")
    for i in range(45):
        org = rng.choice(ORGS)
        with database.write(author_org=f"Organization/{org}") as conn:
            repo = Repository(conn)
            repo.create({"resourceType": "Patient", "id": f"p{i}",
                         "gender": rng.choice(["male", "female"]),
                         "managingOrganization": _ref(f"Organization/{org}")},
                        res_id=f"p{i}", method="PUT")
            for k in range(rng.choice([0, 1, 1, 2, 3])):
                status = rng.choice(STATUSES + ("requested", "requested"))
                task = {"resourceType": "Task", "id": f"t{i}-{k}", "status": status,
                        "intent": "order", "for": _ref(f"Patient/p{i}"),
                        "requester": _ref(f"Organization/{org}")}
                if status != "requested" or rng.random() < 0.3:
                    task["owner"] = _ref(f"Organization/{rng.choice(ORGS)}")
                repo.create(task, res_id=task["id"], method="PUT")
    with database.write() as conn:
        repo = Repository(conn)
        for i in range(0, 45, 11):
            repo.delete("Patient", f"p{i}")
            repo.delete("Task", f"t{i + 1}-0")
    return services


def _callers(world) -> list[Call | None]:
    """No restriction, and staff of an organization (the referral compartment in SQL)."""
    staff = [AccessContext(client_id=f"client-{o}", scopes=parse_scopes("system/*.cruds"),
                           organization=f"Organization/{o}") for o in ORGS]
    return [None] + [Call(services=world, base_url=BASE, access=ctx) for ctx in staff[:1]]


def _run(database, call: Call | None, rt: str, params: list[tuple[str, str]],
         plan: ScanPlan | None) -> SearchResult:
    with database.read() as conn:
        restrict = access.restriction(conn, call) if call is not None else None
        parsed = parse_search(rt, params, strict=True, base_url=BASE)
        return execute_search(conn, parsed, restrict=restrict, scan=plan)


def _walk(database, call, rt, params, plan) -> list[tuple]:
    """Every page forwards, then backwards from the last one: (ids, total, cursors)."""
    pages = []
    result = _run(database, call, rt, params, plan)
    pages.append(result)
    while result.next_cursor and len(pages) < 200:
        result = _run(database, call, rt, params + [("_cursor", result.next_cursor)], plan)
        pages.append(result)
    while result.prev_cursor and len(pages) < 400:
        result = _run(database, call, rt, params + [("_cursor", result.prev_cursor)], plan)
        pages.append(result)
    return [([m.res_id for m in p.matches], p.total, p.next_cursor, p.prev_cursor)
            for p in pages]


def _pids(database, rt: str, ids: list[str]) -> list[int]:
    with database.read() as conn:
        rows = dict(conn.execute(select(resources.c.res_id, resources.c.pid).where(
            resources.c.res_type == rt, resources.c.res_id.in_(ids))).all())
    return [rows[i] for i in ids]


@pytest.mark.parametrize("rt,params", QUERIES, ids=lambda q: str(q))
def test_scan_pages_equal_plain_pages(database, world, rt, params):
    for call in _callers(world):
        full = _run(database, call, rt, params + [("_count", "1000"), ("_total", "accurate")],
                    None)
        ids = [m.res_id for m in full.matches]
        assert full.total == len(ids)
        assert _pids(database, rt, ids) == sorted(_pids(database, rt, ids))  # pid order
        # every page of 7 forwards and back (the pages after the first read their bodies
        # in the page statement); the first page of exactly all matches, with the default
        # bounded total, with the accurate total
        plain = _walk(database, call, rt, params + [("_count", "7")], None)
        assert [m for page in plain[:len(plain) // 2 + 1] for m in page[0]] == ids \
            or len(plain) == 1
        firsts = ([("_count", str(max(1, len(ids))))], [], [("_count", "3"),
                  ("_total", "accurate")])
        expected = [_run(database, call, rt, params + extra, None) for extra in firsts]
        for plan in PLANS:
            assert _walk(database, call, rt, params + [("_count", "7")], plan) == plain, (
                call and call.access.organization, plan)
            for extra, want in zip(firsts, expected, strict=True):
                got = _run(database, call, rt, params + extra, plan)
                assert ([m.res_id for m in got.matches], got.total, got.next_cursor) == (
                    [m.res_id for m in want.matches], want.total, want.next_cursor), (
                    call and call.access.organization, extra, plan)


def test_restricted_callers_see_part_of_the_population(database, world):
    """The access-restricted runs above compare non-trivial pages (not all, not nothing)."""
    everything = len(_run(database, None, "Task", [("_count", "1000")], None).matches)
    for call in _callers(world)[1:]:  # and each organization's
        seen = len(_run(database, call, "Task", [("_count", "1000")], None).matches)
        assert 0 < seen < everything


def test_the_scan_runs_when_the_sources_are_many(database, world):
    """The gate and the window themselves: patients with a requested Task (many sources)
    and unowned requested Tasks are found by the scan; the rare accepted Tasks send it back
    to the plain plan; a search driven by a reference keeps the plain plan."""
    r = resources.alias("r")
    with database.read() as conn:
        def scan(rt, params, plan, limit):
            parsed = parse_search(rt, params, strict=True, base_url=BASE)
            worth = _scan_worthwhile(conn, parsed, r, plan)
            rows = _scan_page(conn, parsed, r, [r.c.pid], r.c.pid > 0, [r.c.pid], limit,
                              (None, False), plan)
            return worth, rows

        many = ScanPlan(min_driving=20, rows_per_match=4)
        worth, rows = scan("Patient", [("_has:Task:patient:status", "requested")], many, 6)
        assert worth and rows is not None and len(rows) == 6
        worth, _ = scan("Patient", [("_has:Task:patient:status", "accepted")], many, 6)
        assert not worth
        worth, rows = scan("Patient", [("_has:Task:patient:status", "accepted")],
                           ScanPlan(min_driving=1, rows_per_match=1), 6)
        assert worth and rows is None  # six patients in a row do not all have one
        # a broad code drives like the sources of a `_has`: sized, then scanned
        worth, rows = scan("Task", [("owner:missing", "true"), ("status", "requested")],
                           many, 6)
        assert worth and rows is not None and len(rows) == 6
        worth, _ = scan("Task", [("status", "accepted")], many, 6)
        assert not worth
        # a selective driver (a reference) is read, never sized
        worth, _ = scan("Task", [("owner", "Organization/o1")], ScanPlan(min_driving=0), 6)
        assert not worth


def test_restricted_callers_keep_the_plain_plan(database, world):
    """An organization's staff never take the scan (each walked row would also be probed
    against their compartment): no sizing statement, where an open caller's search has one."""
    from tests.test_search_gravity import count_statements

    params = [("owner:missing", "true"), ("status", "requested")]
    plan = ScanPlan(min_driving=1, rows_per_match=10_000)
    statements = {}
    for call in _callers(world):
        with count_statements(database.engine) as seen:
            _run(database, call, "Task", params, plan)
        statements[call is None] = [s for s in seen if "count(" in s.lower()]
    assert statements[True] and not statements[False]
