"""Every registered operation, at every level it supports, called by a foreign
organization with hidden targets and hidden references: nothing hidden comes back.

The clinic's referral carries marker words (the patient's name, the Condition's text)
and ids the attacker never saw; a response leaks when it holds a marker or a hidden id
that the request itself did not name. New operations are swept automatically."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.outcomes_support import csv_rows, groups
from tests.samples import sample
from tests.security_support import create, directory, ref, referral, start

MARKERS = ("Quillfeather", "MARKER-CONDITION-TEXT")


@pytest.fixture(scope="module")
def world(database):
    server = start(database)
    directory(server, ["A", "B", "E"])
    for client, org in (("ehr-a", "A"), ("cbo-b", "B"), ("evil", "E")):
        server.register(client, org)
    clinic = server.client("ehr-a")
    server.hidden = referral(clinic, "A", "B", patient_name="Quillfeather", consent=True)
    cond = clinic.get(server.hidden["condition"]).json()
    cond["code"]["text"] = "MARKER-CONDITION-TEXT"
    assert clinic.put(server.hidden["condition"], cond).status_code == 200
    sub = sample("Subscription")
    sub["_criteria"]["extension"][0]["valueString"] = "Task?owner=Organization/A"
    server.hidden["subscription"] = f"Subscription/{create(clinic, sub)['id']}"
    server.hidden_ids = {r.split("/")[1] for r in server.hidden.values()}
    server.operations = _operations(server)
    yield server
    server.live.stop()


def _operations(server: Any) -> list[Any]:
    return list(server.app.extensions["fhir_services"].operations.operations.values())


def _parameters(hidden: dict[str, str]) -> dict:
    """A Parameters body naming every hidden resource under common parameter names."""
    names = ("patient", "subject", "target", "reference", "focus", "task", "service-request",
             "questionnaire-response", "resource")
    params = [{"name": n, "valueReference": ref(r)} for n in names for r in hidden.values()]
    params.append({"name": "reason", "valueString": "x"})
    return {"resourceType": "Parameters", "parameter": params}


def _calls(op: Any, hidden: dict[str, str]) -> list[tuple[str, str, Any]]:
    """(method, path, body) for every level and method the operation supports."""
    by_type = {r.split("/")[0]: r for r in hidden.values()}
    paths: list[str] = []
    if op.system:
        paths.append(f"${op.name}")
    for res_type in sorted(op.types):
        if op.type_level:
            paths.append(f"{res_type}/${op.name}")
        if op.instance_level and res_type in by_type:
            paths.append(f"{by_type[res_type]}/${op.name}")
    query = "&".join(f"{k}={v}" for k, v in (
        ("patient", hidden["patient"]), ("subject", hidden["patient"]),
        ("requester", "Organization/A"), ("owner", "Organization/B"), ("id", hidden["task"])))
    calls = []
    for path in paths:
        for method in sorted(op.methods):
            if method == "GET":
                calls += [("GET", path, None), ("GET", f"{path}?{query}", None)]
            else:
                calls += [("POST", path, _parameters(hidden))]
    return calls


def _leaks(world: Any, request_text: str, response_text: str) -> list[str]:
    named = {i for i in world.hidden_ids if i in request_text}
    found = [m for m in MARKERS if m in response_text]
    found += [i for i in world.hidden_ids - named if i in response_text]
    return found


def test_every_operation_is_swept(world):
    names = {op.name for op in world.operations}
    assert {"recommend-care", "referral-metrics", "timeline", "match", "extract", "redirect",
            "status", "events", "validate", "evaluate-measure"} <= names


def test_no_operation_returns_hidden_data_to_a_foreign_organization(world):
    evil = world.client("evil")
    failures = []
    for op in world.operations:
        for method, path, body in _calls(op, world.hidden):
            resp = evil.post(path, body) if method == "POST" else evil.get(path)
            request_text = path + json.dumps(body or {})
            if resp.status_code >= 500:
                failures.append(f"{method} {path}: {resp.status_code}")
            leaks = _leaks(world, request_text, resp.text)
            if leaks:
                failures.append(f"{method} {path}: {resp.status_code} leaks {leaks}")
    assert not failures, "\n".join(failures)


def test_the_recipient_sees_what_the_referral_gives_it(world):
    """Not vacuous: the organization the referral was sent to does see the markers."""
    b = world.client("cbo-b")
    assert "Quillfeather" in b.get(world.hidden["patient"]).text
    assert "MARKER-CONDITION-TEXT" in b.get(world.hidden["condition"]).text  # consent given


# -- the outcome measures' facts table: no row of another organization counts ------------
EVERY_GROUPING = ("requester,owner,category,service,priority,week,month,age-band,sex,race,"
                  "ethnicity,language,coverage")


def _totals(http: Any) -> tuple[dict, dict, dict]:
    """($referral-metrics "all" group, its CSV "all" row, closed-loop MeasureReport
    populations) as the caller sees them."""
    answer = http.get("$referral-metrics", params={"group-by": EVERY_GROUPING})
    assert answer.status_code == 200, answer.text
    table = http.get("$referral-metrics", params={"group-by": EVERY_GROUPING,
                                                  "_format": "text/csv"})
    assert table.status_code == 200, table.text
    report = http.get("Measure/closed-loop-rate/$evaluate-measure",
                      params={"periodStart": "2000-01-01", "periodEnd": "2100-01-01"})
    assert report.status_code == 200, report.text
    populations = {p["code"]["coding"][0]["code"]: p["count"]
                   for p in report.json()["group"][0]["population"]}
    row = next(r for r in csv_rows(table.text) if r["dimension"] == "all")
    return groups(answer.json(), "all")["all"], row, populations


def test_outcome_measures_count_no_referral_of_another_organization(world):
    """The referral facts table is read through the access layer: a foreign organization
    counts nothing of the clinic's referral, in any grouping, the CSV or a MeasureReport;
    the clinic and the recipient each count it (not vacuous)."""
    for client in ("ehr-a", "cbo-b"):
        group, row, populations = _totals(world.client(client))
        assert group["total"] >= 1 and row["total"] == str(group["total"]), client
        assert populations["initial-population"] >= 1, client
    evil = world.client("evil")
    group, row, populations = _totals(evil)
    assert group["total"] == 0 and row["total"] == "0"
    assert populations["initial-population"] == 0
    for query in ({"group-by": EVERY_GROUPING}, {"owner": "Organization/B"},
                  {"requester": "Organization/A", "_format": "text/csv"}):
        text = evil.get("$referral-metrics", params=query).text
        assert "Org A" not in text and "Org B" not in text, query
        assert not [i for i in world.hidden_ids if i in text], query
