"""$match on a fixed, hand-built directory: hand-checked rankings and reasons, every hard
filter, ties, crisis routing, ServiceRequest-derived criteria and bad criteria."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from fhir_server.matching.ranking import Criteria, Stats, evaluate
from mappers import directory_model as dm
from tests.samples import sample
from tests.snapshot import db_snapshot

TODAY = date.today()
POINT = (42.0, -71.0)


def _service(sid: str, name: str, *, cat: str = "therapy", loc: str | None = "loc-a",
             langs: tuple = ("en",), modalities: tuple = ("in-person",),
             coverage: tuple = ("medicaid",), capacity: str = "capacity", wait: int = 0,
             confirmed_days_ago: int = 0, age: tuple | None = None, active: bool = True,
             always_open: bool = False) -> dict:
    svc = {"resourceType": "HealthcareService", "id": sid, "active": active, "name": name,
           "providedBy": {"reference": "Organization/org-a"},
           "category": [dm.coding(dm.SERVICE_CATEGORY_CS, cat)],
           "communication": [dm.coding(dm.BCP47, lang) for lang in langs],
           "characteristic": [dm.coding(dm.MODALITY_CS, m) for m in modalities],
           "extension": [dm.coverage_extension(c) for c in coverage]}
    if loc:
        svc["location"] = [{"reference": f"Location/{loc}"}]
    if age:
        svc["extension"].append(dm.age_extension(*age))
    if always_open:
        svc["availableTime"] = dm.always_open_time()
    day = TODAY - timedelta(days=confirmed_days_ago)
    from datetime import datetime

    return dm.set_capacity(svc, capacity, None, wait,
                           confirmed=datetime(day.year, day.month, day.day, 0, 30))


def _location(lid: str, lat: float, lon: float) -> dict:
    return {"resourceType": "Location", "id": lid, "status": "active", "name": lid,
            "position": {"latitude": lat, "longitude": lon}}


DIRECTORY = [
    {"resourceType": "Organization", "id": "org-a", "active": True, "name": "Org A"},
    _location("loc-a", 42.0, -71.0),
    _location("loc-north", 42.1, -71.0),  # 11.12 km north of POINT
    _location("loc-far", 43.0, -71.0),  # ~111 km
    _service("svc-a", "Alpha therapy"),
    _service("svc-b", "Bravo therapy", loc="loc-north", capacity="waitlist", wait=30),
    _service("svc-c", "Charlie therapy", confirmed_days_ago=100),
    _service("svc-d", "Delta therapy", capacity="no-capacity"),
    _service("svc-e", "Echo therapy (es)", langs=("es",)),
    _service("svc-f", "Foxtrot teen therapy", age=(12, 17)),
    _service("svc-g", "Golf therapy", coverage=("private",)),
    _service("svc-h", "Hotel telehealth therapy", loc=None, modalities=("telehealth",)),
    _service("svc-i", "India therapy", loc="loc-far"),
    _service("svc-j", "Juliet therapy (closed)", active=False),
    _service("svc-k", "Kilo crisis 24/7", cat="crisis", always_open=True),
    _service("svc-l", "Lima crisis weekdays", cat="crisis"),
    _service("svc-m", "Mike psychiatry", cat="psychiatry"),
    _service("svc-t1", "Tango therapy", cat="peer-support"),
    _service("svc-t2", "Tango therapy", cat="peer-support"),
]


@pytest.fixture(scope="module")
def directory(server):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in DIRECTORY]}
    server.post("", bundle).raise_for_status()
    return server


def _params(**kw) -> dict:
    out = []
    for name, value in kw.items():
        name = name.replace("_", "-")
        key = {"age": "valueDecimal", "safety-flag": "valueBoolean", "count": "valueInteger",
               "radius": "valueDecimal", "near-misses": "valueInteger"}.get(name, "valueString")
        for v in value if isinstance(value, list) else [value]:
            out.append({"name": name, key: v})
    return {"resourceType": "Parameters", "parameter": out}


def _match(server, **kw) -> dict:
    response = server.post("HealthcareService/$match", _params(**kw))
    assert response.status_code == 200, response.text
    return response.json()


def _ids(bundle: dict, mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle["entry"] if e["search"].get("mode") == mode]


def _reasons(bundle: dict, sid: str, kind: str = "match-reason") -> list[str]:
    entry = next(e for e in bundle["entry"] if e.get("resource", {}).get("id") == sid)
    return [x["valueString"] for x in entry["search"]["extension"] if x["url"].endswith(kind)]


def test_hand_checked_ranking_scores_and_reasons(directory):
    bundle = _match(directory, service_category="therapy", near="42.0|-71.0|50|km",
                    language="en", coverage="medicaid", modality="in-person", age=30)
    assert _ids(bundle) == ["svc-a", "svc-c", "svc-b"]
    assert bundle["total"] == 3
    scores = {e["resource"]["id"]: e["search"]["score"] for e in bundle["entry"]
              if e["search"].get("mode") == "match"}
    # A: .30*1 + .25*1 + .20*1 + .10*1 + .15*.5 (no history)
    # C: stale -> wait and capacity halved: .30 + .125 + .10 + .10 + .075
    # B: distance 1-11.12/50, wait 1-30/60, waitlist .3: .23328 + .125 + .06 + .10 + .075
    assert scores == {"svc-a": 0.925, "svc-c": 0.7, "svc-b": 0.5933}
    assert _reasons(bundle, "svc-a") == [
        "category: therapy", "age: 30 within ages 0-any", "language: speaks en",
        "coverage: accepts medicaid", "modality: in-person", "distance: 0 km",
        "capacity confirmed 0 days ago", "capacity: capacity", "wait: 0 days"]
    assert "stale capacity: confirmed 100 days ago (rank lowered)" in _reasons(bundle, "svc-c")
    assert bundle["entry"][-1]["search"]["mode"] == "outcome"


def test_each_hard_filter_names_the_failed_criterion(directory):
    bundle = _match(directory, service_category="therapy", near="42.0|-71.0|50|km",
                    language="en", coverage="medicaid", modality="in-person", age=30,
                    near_misses=20)
    misses = [e for e in bundle["entry"] if "mode" not in e["search"]]
    assert all(e["search"]["extension"][0]["url"].endswith("/match-near-miss") for e in misses)
    failed = {e["resource"]["id"]: _reasons(bundle, e["resource"]["id"], "match-failed")
              for e in misses}
    assert failed["svc-d"] == ["capacity: no capacity"]
    assert failed["svc-e"] == ["language: en not offered"]
    assert failed["svc-f"] == ["age: 30 outside ages 12-17"]
    assert failed["svc-g"] == ["coverage: medicaid not accepted"]
    assert failed["svc-i"] == ["distance: 111.2 km > 50 km"]
    assert "svc-a" not in failed and "svc-j" not in failed  # inactive: never suggested
    # svc-h fails two criteria (modality and no coordinates): not a near miss
    assert "svc-h" not in failed


def test_telehealth_skips_distance_and_interpreter_counts_for_language(directory):
    bundle = _match(directory, service_category="therapy", modality="telehealth",
                    near="42.0|-71.0|5|km")
    assert _ids(bundle) == ["svc-h"]
    assert "distance: not applied (telehealth)" in _reasons(bundle, "svc-h")
    spanish = _match(directory, service_category="therapy", language="es", count=3)
    assert _ids(spanish)[0] == "svc-e"


def test_ties_break_on_distance_then_name_then_id(directory):
    bundle = _match(directory, service_category="peer-support")
    assert _ids(bundle) == ["svc-t1", "svc-t2"]
    entries = [e for e in bundle["entry"] if e["search"].get("mode") == "match"]
    assert entries[0]["search"]["score"] == entries[1]["search"]["score"]
    assert _match(directory, service_category="peer-support") == bundle  # deterministic


def test_crisis_routing_keeps_only_24_7_crisis_services(directory):
    bundle = _match(directory, level_of_care="safety", safety_flag=True)
    assert _ids(bundle) == ["svc-k"]
    assert any(r.startswith("crisis routing (active safety flag)")
               for r in _reasons(bundle, "svc-k"))
    assert _reasons(bundle, "svc-l", "match-failed") == ["crisis-24-7: not available 24/7"]
    stat = _match(directory, priority="stat", service_category="crisis")
    assert _ids(stat) == ["svc-k"]


def test_level_of_care_selects_categories(directory):
    bundle = _match(directory, level_of_care="specialist", count=50)
    assert set(_ids(bundle)) == {"svc-m", "svc-k", "svc-l"}


@pytest.mark.parametrize("params, where, text", [
    ({"parameter": [{"name": "colour", "valueString": "red"}]},
     "Parameters.parameter[0].name", "unknown $match parameter"),
    ({"parameter": [{"name": "service-category", "valueString": "astrology"}]},
     "Parameters.parameter[0]", "unknown service category"),
    ({"parameter": [{"name": "near", "valueString": "95|-71"}]},
     "Parameters.parameter[0]", "out of range"),
    ({"parameter": [{"name": "service-category", "valueString": "therapy"},
                    {"name": "age", "valueDecimal": -3}]},
     "Parameters.parameter[1]", "at least 0"),
    ({"parameter": [{"name": "service-category", "valueString": "peer-support"},
                    {"name": "level-of-care", "valueString": "specialist"}]},
     "Parameters", "contradicts level-of-care"),
    ({"parameter": [{"name": "service-category", "valueString": "therapy"},
                    {"name": "priority", "valueString": "stat"}]},
     "Parameters", "contradicts service-category"),
    ({"parameter": [{"name": "language", "valueString": "en"}]},
     "Parameters", "needs a service-category"),
])
def test_bad_criteria_are_400_with_expression(directory, params, where, text):
    before = db_snapshot(directory.database)
    response = directory.post("HealthcareService/$match", {"resourceType": "Parameters",
                                                           **params})
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == [where] and text in issue["diagnostics"]
    assert db_snapshot(directory.database) == before


def test_service_request_match_uses_patient_coverage_and_flags(directory):
    patient = sample("Patient")
    patient.update(birthDate="1990-01-01",
                   communication=[{"language": dm.coding(dm.BCP47, "es"), "preferred": True}],
                   address=[{"city": "Boston", "extension": [{
                       "url": "http://hl7.org/fhir/StructureDefinition/geolocation",
                       "extension": [{"url": "latitude", "valueDecimal": 42.0},
                                     {"url": "longitude", "valueDecimal": -71.0}]}]}])
    pid = directory.post("Patient", patient).json()["id"]
    sr = sample("ServiceRequest")
    sr["subject"] = {"reference": f"Patient/{pid}"}
    sr["code"] = {"coding": [{"system": dm.SNOMED, "code": "306226009"}]}
    sr.pop("insurance", None)
    sr_id = directory.post("ServiceRequest", sr).json()["id"]
    bundle = directory.post(f"ServiceRequest/{sr_id}/$match").json()
    assert _ids(bundle) == ["svc-e"]  # the only Spanish-speaking therapy service
    outcome = bundle["entry"][-1]["resource"]["issue"][0]["diagnostics"]
    age = TODAY.year - 1990
    assert "language=es" in outcome and f"age={float(age)}" in outcome
    override = directory.post(f"ServiceRequest/{sr_id}/$match", _params(language="en"))
    assert override.status_code == 200 and "svc-a" in _ids(override.json())
    assert directory.post("ServiceRequest/nope/$match").status_code == 404
    assert directory.post("HealthcareService/svc-a/$match", _params()).status_code == 400


def test_history_component_uses_acceptance_and_speed():
    facts = dm.service_facts(_service("x", "X"))
    crit = Criteria(categories=frozenset({"therapy"}), today=TODAY)
    none = evaluate(facts, crit, None)
    good = evaluate(facts, crit, Stats(1.0, 0.0, 4))
    slow = evaluate(facts, crit, Stats(0.5, 168.0, 4))
    assert (none.score, good.score, slow.score) == (0.775, 0.85, 0.7375)
    assert "history: 4 referrals, acceptance 100%, median time to accept 0 h" in good.reasons
