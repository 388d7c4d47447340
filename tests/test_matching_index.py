"""$match through the indexed fast path (filter bitsets, position grid, incremental cache)
gives exactly what the plain per-service rules give: the generated 240-service example
directory over HTTP, compared with `evaluate` applied to every service; then writes
(moved Location, changed and deleted services) are seen by the next $match."""

from __future__ import annotations

import json
import math
from datetime import date
from pathlib import Path

import pytest

from fhir_server.matching.ranking import Criteria, evaluate
from mappers import directory_model as dm

EXAMPLE = Path(__file__).resolve().parents[1] / "examples/directory/directory-bundle.json"
CENTER = (42.3601, -71.0589)
NEAR_MISS = f"{dm.SD_BASE}/match-near-miss"

CASES = [
    dict(categories=["therapy"], near=(42.36, -71.06), radius=25),
    dict(categories=["psychiatry", "collaborative-care"], near=(42.5, -71.3), radius=10,
         language="es", near_misses=20),
    dict(categories=["therapy"], near=(42.2, -70.9), radius=15, coverage="medicaid", age=15,
         count=50, near_misses=50),
    dict(categories=["crisis"], crisis=True, near=(42.36, -71.06), radius=50, count=100),
    dict(categories=["substance-use"], modality="telehealth", near=(42.3, -71.1), radius=5),
    dict(categories=["peer-support", "community"], language="pt", near_misses=30),
    dict(categories=["therapy"], near=(44.5, -68.0), radius=20, near_misses=8),  # far away
    dict(categories=["community"], near=(42.36, -71.06), radius=0.5, near_misses=10),
]


@pytest.fixture(scope="module")
def example(server):
    bundle = json.loads(EXAMPLE.read_text())
    server.post("", bundle).raise_for_status()
    return server, _facts(server)


def _facts(server) -> list[dm.ServiceFacts]:
    """Matching facts of every stored service, read back over HTTP."""
    def every(res_type: str) -> list[dict]:
        out, url = [], f"{res_type}?_count=1000"
        while url:
            page = server.get(url).json()
            out += [e["resource"] for e in page.get("entry", [])]
            url = next((link["url"] for link in page.get("link", [])
                        if link["relation"] == "next"), None)
        return out

    positions = {loc["id"]: dm.location_position(loc) for loc in every("Location")
                 if loc.get("status") != "inactive"}
    out = []
    for svc in every("HealthcareService"):
        refs = [r["reference"].split("/", 1)[1] for r in svc.get("location", [])]
        out.append(dm.service_facts(svc, tuple(positions[r] for r in refs
                                               if positions.get(r) is not None)))
    return out


def _criteria(case: dict) -> Criteria:
    return Criteria(categories=frozenset(case["categories"]), crisis=case.get("crisis", False),
                    crisis_reason="priority stat" if case.get("crisis") else "",
                    age=case.get("age"), language=case.get("language"),
                    coverage=case.get("coverage"), modality=case.get("modality"),
                    point=case.get("near"), radius_km=case.get("radius", 50.0),
                    count=case.get("count", 10), near_misses=case.get("near_misses", 5),
                    today=date.today())


def _reference(facts: list[dm.ServiceFacts], crit: Criteria) -> tuple[list, int, list]:
    """The rules applied to each service on its own, sorted as DIRECTORY.md says."""
    cands = [c for c in (evaluate(f, crit, None) for f in facts) if c is not None]
    far = [c.distance_km if c.distance_km is not None else math.inf for c in cands]
    matched = sorted((-c.score, d, c.facts.name, c.facts.service_id)
                     for c, d in zip(cands, far, strict=True) if not c.failed)
    missed = sorted((d, c.facts.name, c.facts.service_id)
                    for c, d in zip(cands, far, strict=True)
                    if len(c.failed) == 1 and c.facts.active)
    return ([(t[3], -t[0]) for t in matched[:crit.count]], len(matched),
            [t[2] for t in missed[:crit.near_misses]])


def _params(case: dict) -> dict:
    params = [{"name": "service-category", "valueCode": c} for c in case["categories"]]
    if case.get("crisis"):
        params.append({"name": "priority", "valueCode": "stat"})
    for name, key in (("language", "valueCode"), ("coverage", "valueCode"),
                      ("modality", "valueCode"), ("age", "valueDecimal"),
                      ("count", "valueInteger"), ("near_misses", "valueInteger")):
        if name in case:
            params.append({"name": name.replace("_", "-"), key: case[name]})
    if "near" in case:
        lat, lon = case["near"]
        params.append({"name": "near", "valueString": f"{lat}|{lon}|{case['radius']}|km"})
    return {"resourceType": "Parameters", "parameter": params}


def _match(server, case: dict) -> tuple[list, int, list]:
    response = server.post("HealthcareService/$match", _params(case))
    assert response.status_code == 200, response.text
    bundle = response.json()
    shown = [(e["resource"]["id"], e["search"]["score"]) for e in bundle["entry"]
             if e["search"].get("mode") == "match"]
    misses = [e["resource"]["id"] for e in bundle["entry"] if "mode" not in e["search"]
              and e["search"]["extension"][0] == {"url": NEAR_MISS, "valueBoolean": True}]
    return shown, bundle["total"], misses


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_indexed_match_equals_per_service_rules(example, case):
    server, facts = example
    got = _match(server, case)
    assert got == _reference(facts, _criteria(case))
    assert got[1] > 0 or got[2], "each case should exercise matches or near misses"


def test_writes_are_seen_by_the_next_match(example):
    server, _ = example
    case = dict(categories=["therapy"], near=(42.36, -71.06), radius=25, count=100)
    before = _match(server, case)
    assert before[1] > 3
    first, second = before[0][0][0], before[0][1][0]
    # move every Location of the best service far away: it leaves the radius
    svc = server.get(f"HealthcareService/{first}").json()
    for ref in svc["location"]:
        loc = server.get(ref["reference"]).json()
        loc["position"] = {"latitude": 47.6, "longitude": -122.3}
        server.put(ref["reference"], loc).raise_for_status()
    # the second best is made inactive: it leaves the matches (and the near misses)
    other = server.get(f"HealthcareService/{second}").json()
    other["active"] = False
    server.put(f"HealthcareService/{second}", other).raise_for_status()
    after = _match(server, case)
    ids = [sid for sid, _ in after[0]]
    assert first not in ids and second not in ids
    assert after == _reference(_facts(server), _criteria(case))
    # a deleted service is gone from every list
    third = ids[0]
    server.delete(f"HealthcareService/{third}").raise_for_status()
    final = _match(server, case)
    assert third not in [sid for sid, _ in final[0]] + final[2]
    assert final[1] == after[1] - 1
