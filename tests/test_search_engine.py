"""Search features end to end over the SQL engine (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import literal

from fhir_server.errors import FhirError
from fhir_server.interactions.search import search_bundle
from fhir_server.storage.search_sql import find_ids
from tests.search_fixtures import mark_deleted, store, wipe

BASE = "http://fhir.example.org/fhir"
LOINC = "http://loinc.org"


@pytest.fixture(scope="module")
def db(database):
    with database.write() as conn:
        wipe(conn)
        store(conn, {"resourceType": "Patient", "id": "p1", "gender": "female",
                     "birthDate": "1980-05-02",
                     "meta": {"tag": [{"system": "http://tags", "code": "vip"}],
                              "security": [{"system": "http://sec", "code": "R"}],
                              "source": "http://ehr.example.org",
                              "profile": ["http://example.org/StructureDefinition/p"]},
                     "name": [{"family": "Éloïse-Dupont", "given": ["Anne"]}],
                     "identifier": [{"system": "http://mrn", "value": "MRN1",
                                     "type": {"coding": [{
                                         "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                         "code": "MR"}], "text": "Medical record"}}],
                     "generalPractitioner": [{"reference": "Practitioner/dr1"}]})
        store(conn, {"resourceType": "Patient", "id": "p2", "gender": "male",
                     "birthDate": "1975", "name": [{"family": "Smith", "given": ["Bob"]}],
                     "identifier": [{"system": "http://other", "value": "MRN1"}]})
        store(conn, {"resourceType": "Practitioner", "id": "dr1",
                     "name": [{"family": "Water"}]})
        store(conn, {"resourceType": "Organization", "id": "org1", "name": "Food Bank",
                     "address": [{"city": "Springfield"}]})
        store(conn, {"resourceType": "ValueSet", "id": "vs1",
                     "url": "http://example.org/ValueSet/phq", "status": "active",
                     "compose": {"include": [{"system": LOINC, "concept": [
                         {"code": "44261-6"}, {"code": "44260-8"}]}]}})
        store(conn, {"resourceType": "Observation", "id": "o1", "status": "final",
                     "code": {"coding": [{"system": LOINC, "code": "44261-6",
                                          "display": "PHQ-9 total score"}]},
                     "subject": {"reference": "Patient/p1"},
                     "performer": [{"reference": "Practitioner/dr1"}],
                     "effectivePeriod": {"start": "2024-01-01T08:00:00Z",
                                         "end": "2024-01-01T09:00:00Z"},
                     "valueQuantity": {"value": 15.5, "unit": "score",
                                       "system": "http://unitsofmeasure.org",
                                       "code": "{score}"},
                     "component": [{"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                                    "valueQuantity": {"value": 120, "code": "mm[Hg]"}}]})
        store(conn, {"resourceType": "Observation", "id": "o2", "status": "final",
                     "code": {"coding": [{"system": LOINC, "code": "1-8"}], "text": "Other"},
                     "subject": {"reference": f"{BASE}/Patient/p2"},
                     "effectiveDateTime": "2023-06-15", "valueQuantity": {"value": 3}})
        store(conn, {"resourceType": "Observation", "id": "o3", "status": "final",
                     "code": {"coding": [{"system": LOINC, "code": "44260-8"}]},
                     "subject": {"reference": "Patient/p2",
                                 "identifier": {"system": "http://mrn", "value": "X9"}}})
        store(conn, {"resourceType": "Location", "id": "loc1", "name": "Near",
                     "position": {"latitude": 42.0, "longitude": -71.0}})
        store(conn, {"resourceType": "Location", "id": "loc2", "name": "Far",
                     "position": {"latitude": 45.0, "longitude": -71.0}})
        store(conn, {"resourceType": "Questionnaire", "id": "q1", "status": "active",
                     "url": "http://example.org/fhir/Questionnaire/phq9"})
        store(conn, {"resourceType": "Provenance", "id": "prov1",
                     "recorded": "2024-01-01T00:00:00Z", "target": [{"reference": "Task/t1"}],
                     "agent": [{"who": {"reference": "Practitioner/dr1"}}]})
        store(conn, {"resourceType": "Task", "id": "t1", "status": "requested",
                     "intent": "order", "for": {"reference": "Patient/p1"},
                     "focus": {"reference": "Observation/o1"}})
        store(conn, {"resourceType": "Patient", "id": "gone", "name": [{"family": "Smith"}]})
        mark_deleted(conn, "Patient", "gone")
    return database


def search(db, res_type, params, strict=True, **kw):
    with db.read() as conn:
        return search_bundle(conn, res_type, params, base_url=BASE, strict=strict, **kw)


def ids(bundle, mode="match"):
    return sorted(e["resource"]["id"] for e in bundle.get("entry", [])
                  if e["search"]["mode"] == mode)


@pytest.mark.parametrize("params,expected", [
    ([("name", "eloise")], ["p1"]),
    ([("name", "ÉLO")], ["p1"]),
    ([("name", "dupont")], []),
    ([("name:contains", "dupont")], ["p1"]),
    ([("name:exact", "Éloïse-Dupont")], ["p1"]),
    ([("name:exact", "eloïse-dupont")], []),
    ([("family", "smi")], ["p2"]),
    ([("name", "anne,bob")], ["p1", "p2"]),
    ([("name", "anne"), ("name", "bob")], []),
    ([("identifier", "MRN1")], ["p1", "p2"]),
    ([("identifier", "http://mrn|MRN1")], ["p1"]),
    ([("identifier", "http://mrn|")], ["p1"]),
    ([("identifier:of-type",
       "http://terminology.hl7.org/CodeSystem/v2-0203|MR|MRN1")], ["p1"]),
    ([("identifier:text", "medical")], ["p1"]),
    ([("gender:not", "male")], ["p1"]),
    ([("gender:missing", "true")], []),
    ([("birthdate", "1980")], ["p1"]),
    ([("birthdate", "ge1976")], ["p1"]),
    ([("birthdate", "lt1980-05")], ["p2"]),
    ([("birthdate", "sa1975")], ["p1"]),
    ([("birthdate", "ne1980-05-02")], ["p2"]),
    ([("general-practitioner", "dr1")], ["p1"]),
    ([("general-practitioner:Practitioner", "dr1")], ["p1"]),
    ([("general-practitioner", f"{BASE}/Practitioner/dr1")], ["p1"]),
    ([("general-practitioner.name", "water")], ["p1"]),
    ([("_tag", "http://tags|vip")], ["p1"]),
    ([("_security", "R")], ["p1"]),
    ([("_source", "http://ehr.example.org")], ["p1"]),
    ([("_profile", "http://example.org/StructureDefinition/p")], ["p1"]),
    ([("_id", "p2,gone")], ["p2"]),
    ([("_has:Observation:patient:code", "44261-6")], ["p1"]),
    ([("_has:Observation:subject:_has:Task:focus:status", "requested")], ["p1"]),
    # Another filter drives; `_has` is then a probe per patient (its sources by reference).
    ([("name", "eloise"), ("_has:Observation:patient:code", "44261-6")], ["p1"]),
    ([("family", "smi"), ("_has:Observation:patient:code", "44261-6")], []),
    ([("name", "eloise"), ("_has:Observation:subject:_has:Task:focus:status", "requested")],
     ["p1"]),
    ([("name", "eloise"), ("_has:Observation:patient:code", "nope")], []),
    ([("_lastUpdated", "gt2000-01-01")], ["p1", "p2"]),
])
def test_patient_searches(db, params, expected):
    assert ids(search(db, "Patient", params)) == expected


@pytest.mark.parametrize("params,expected", [
    ([("code", "http://loinc.org|44261-6")], ["o1"]),
    ([("code:text", "phq")], ["o1"]),
    ([("code:text", "oth")], ["o2"]),
    ([("code:in", "http://example.org/ValueSet/phq")], ["o1", "o3"]),
    ([("code:not-in", "http://example.org/ValueSet/phq")], ["o2"]),
    ([("value-quantity", "15.5")], ["o1"]),
    ([("value-quantity", "16")], ["o1"]),
    ([("value-quantity", "gt15|http://unitsofmeasure.org|{score}")], ["o1"]),
    ([("value-quantity", "15.5||score")], ["o1"]),
    ([("value-quantity", "15.5|http://other|{score}")], []),
    ([("value-quantity", "le3")], ["o2"]),
    ([("value-quantity", "ap3")], ["o2"]),
    ([("date", "2024-01-01")], ["o1"]),
    ([("date", "2024-01-01T08:30")], []),
    ([("date", "gt2024-01-01T08:30")], ["o1"]),
    ([("date", "eb2024")], ["o2"]),
    ([("subject", "Patient/p2")], ["o2", "o3"]),
    ([("subject", f"{BASE}/Patient/p2")], ["o2", "o3"]),
    ([("subject", "http://elsewhere.org/fhir/Patient/p2")], []),
    ([("subject:identifier", "http://mrn|X9")], ["o3"]),
    ([("subject:Patient.gender", "female")], ["o1"]),
    ([("patient.general-practitioner.name", "wat")], ["o1"]),
    ([("performer:missing", "false")], ["o1"]),
    ([("code-value-quantity", "http://loinc.org|44261-6$gt15")], ["o1"]),
    ([("code-value-quantity", "http://loinc.org|44261-6$lt15")], []),
    ([("component-code-value-quantity", "8480-6$120")], ["o1"]),
    ([("combo-code-value-quantity", "8480-6$120")], ["o1"]),
    ([("combo-code-value-quantity", "44261-6$120")], []),
])
def test_observation_searches(db, params, expected):
    assert ids(search(db, "Observation", params)) == expected


def test_location_near_and_uri_modifiers(db):
    assert ids(search(db, "Location", [("near", "42.01|-71.0|10|km")])) == ["loc1"]
    assert ids(search(db, "Location", [("near", "43.5|-71|400")])) == ["loc1", "loc2"]
    q = "http://example.org/fhir/Questionnaire/phq9"
    assert ids(search(db, "Questionnaire", [("url", q)])) == ["q1"]
    assert ids(search(db, "Questionnaire", [("url:below", "http://example.org/fhir")])) == ["q1"]
    assert ids(search(db, "Questionnaire", [("url:above", q + "/v2/extra")])) == ["q1"]
    assert ids(search(db, "Questionnaire", [("url:above", "http://example.org/fhir")])) == []
    assert ids(search(db, "Questionnaire", [("url:below", q + "/v2")])) == []


def test_includes_revincludes_iterate_and_wildcard(db):
    b = search(db, "Task", [("_include", "Task:focus"),
                            ("_include:iterate", "Observation:performer")])
    assert ids(b) == ["t1"] and ids(b, "include") == ["dr1", "o1"]
    b = search(db, "Task", [("_include", "Task:*")])
    assert ids(b, "include") == ["o1", "p1"]
    b = search(db, "Task", [("_revinclude", "Provenance:target")])
    assert ids(b, "include") == ["prov1"]
    b = search(db, "Patient", [("_id", "p1"), ("_revinclude", "Observation:subject"),
                               ("_revinclude:iterate", "Task:focus")])
    assert ids(b, "include") == ["o1", "t1"]
    b = search(db, "Observation", [("_id", "o1"), ("_include", "Observation:subject:Group")])
    assert ids(b, "include") == []


def test_summary_elements_and_total(db):
    b = search(db, "Patient", [("_id", "p1"), ("_summary", "true")])
    res = b["entry"][0]["resource"]
    assert "name" in res and "identifier" in res and "generalPractitioner" not in res
    assert any(t["code"] == "SUBSETTED" for t in res["meta"]["tag"])
    b = search(db, "Patient", [("_id", "p1"), ("_elements", "gender")])
    res = b["entry"][0]["resource"]
    assert set(res) == {"resourceType", "id", "meta", "gender"}
    b = search(db, "Patient", [("_summary", "count")])
    assert b["total"] == 2 and "entry" not in b
    b = search(db, "Patient", [("_total", "none")])
    assert "total" not in b and len(b["entry"]) == 2
    for count_only in ([("_count", "0")], [("_count", "0"), ("_total", "none")]):
        b = search(db, "Patient", count_only)  # fhirpy's count(): the total, no entries
        assert b["total"] == 2 and "entry" not in b
    b = search(db, "Observation", [("_id", "o1"), ("_summary", "data")])
    assert "text" not in b["entry"][0]["resource"]


def test_system_and_compartment_search(db):
    b = search(db, None, [("_type", "Patient,Practitioner"), ("name", "wat,smi")])
    assert ids(b) == ["dr1", "p2"]
    b = search(db, None, [("_id", "o1,t1")])
    assert ids(b) == ["o1", "t1"]
    b = search(db, "Observation", [], compartment=("Patient", "p1"))
    assert ids(b) == ["o1"]
    assert b["link"][0]["url"].startswith(f"{BASE}/Patient/p1/Observation")
    b = search(db, "Task", [("status", "requested")], compartment=("Patient", "p1"))
    assert ids(b) == ["t1"]
    with pytest.raises(FhirError) as exc:
        search(db, "Organization", [], compartment=("Patient", "p1"))
    assert exc.value.status == 400


def test_unknown_parameters_lenient_and_strict(db):
    b = search(db, "Patient", [("foo", "bar"), ("gender", "male")], strict=False)
    assert ids(b) == ["p2"]
    self_url = b["link"][0]["url"]
    assert "foo" not in self_url and "gender=male" in self_url
    outcome = [e for e in b["entry"] if e["search"]["mode"] == "outcome"]
    assert outcome and "foo" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    with pytest.raises(FhirError) as exc:
        search(db, "Patient", [("foo", "bar")])
    assert exc.value.status == 400 and exc.value.issues[0].expression == ["foo"]


@pytest.mark.parametrize("name,value", [
    ("birthdate", "2020-13-01"), ("birthdate", "xx2020"), ("birthdate", "2020-02-30"),
    ("_count", "-1"), ("general-practitioner.nope", "x"), ("gender:exact", "male"),
    ("value-quantity", "abc"), ("_summary", "maybe"), ("_has:Observation:nope:code", "1"),
    ("gender:missing", "perhaps"), ("_cursor", "not-a-cursor"),
])
def test_malformed_values_are_400(db, name, value):
    res_type = "Observation" if name == "value-quantity" else "Patient"
    with pytest.raises(FhirError) as exc:
        search(db, res_type, [(name, value)], strict=False)
    assert exc.value.status == 400
    assert name in exc.value.diagnostics or name in exc.value.issues[0].expression


def test_restrict_narrows_matches_and_includes(db):
    def only_p1_and_tasks(r, types=None):
        return (r.c.res_id == literal("p1")) | (r.c.res_type == literal("Task"))

    b = search(db, "Task", [("_include", "Task:*")], restrict=only_p1_and_tasks)
    assert ids(b) == ["t1"] and ids(b, "include") == ["p1"]
    b = search(db, "Task", [("patient.name", "smith")], restrict=only_p1_and_tasks)
    assert ids(b) == []


def test_find_ids_for_conditional_operations(db):
    with db.read() as conn:
        assert find_ids(conn, "Patient", "identifier=http://mrn|MRN1") == ["p1"]
        assert len(find_ids(conn, "Patient", [("identifier", "MRN1")])) == 2
        assert find_ids(conn, "Patient", "name=nobody") == []
        with pytest.raises(FhirError):
            find_ids(conn, "Patient", "unknown=1")


def test_paging_stays_correct_while_others_write(db):
    params = [("_count", "1"), ("_sort", "_id")]
    first = search(db, "Patient", params)
    assert ids(first) == ["p1"]
    with db.write() as conn:  # a new resource sorting before the cursor must not shift pages
        store(conn, {"resourceType": "Patient", "id": "a0", "gender": "other"})
    try:
        nxt = [lk["url"] for lk in first["link"] if lk["relation"] == "next"][0]
        cursor = nxt.split("_cursor=")[1]
        second = search(db, "Patient", params + [("_cursor", cursor)])
        assert ids(second) == ["p2"]
        assert second["total"] == 3
        with pytest.raises(FhirError) as exc:  # a cursor only fits the _sort it came from
            search(db, "Patient", [("_count", "1"), ("_sort", "-_id"), ("_cursor", cursor)])
        assert exc.value.status == 400
    finally:
        with db.write() as conn:
            mark_deleted(conn, "Patient", "a0")


def test_canonical_include_and_long_values(db):
    with db.write() as conn:
        store(conn, {"resourceType": "QuestionnaireResponse", "id": "qr1",
                     "status": "completed",
                     "questionnaire": "http://example.org/fhir/Questionnaire/phq9",
                     "subject": {"reference": "Patient/p1"}})
        store(conn, {"resourceType": "Basic", "id": "long",
                     "code": {"coding": [{"system": "http://x", "code": "c" * 400}]}})
    b = search(db, "QuestionnaireResponse", [
        ("questionnaire", "http://example.org/fhir/Questionnaire/phq9"),
        ("_include", "QuestionnaireResponse:questionnaire")])
    assert ids(b) == ["qr1"] and ids(b, "include") == ["q1"]
    assert ids(search(db, "Basic", [("code", "http://x|" + "c" * 255)])) == ["long"]
