"""Property test: the in-memory matcher (fhir_server/search/match.py) agrees with SQL search.

Random resources are stored, a random search is run in SQL, and `match.matches` is asked
about every stored resource: the two must select the same ids. Every parameter type and
modifier the matcher supports is drawn: string (plain, :exact, :contains), token (plain,
system|code, |code, system|, :not, :text, :of-type), reference (Type/id, id, own absolute
URL, foreign URL, :Type, :identifier), date (every prefix, `ap` included, on dateTime and
Period), number and quantity (every prefix, system and code), uri (:below, :above),
composite, `near`, `:missing` on each, `_id`, `_lastUpdated`, and the Patient compartment.
Not supported, so not drawn: chains, `_has`, token `:in` / `:not-in` (`criteria` refuses
them; `test_unsupported_criteria_are_refused`).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fhir_server.search import match
from fhir_server.search.values import date_range
from fhir_server.storage.schema import resources as resources_table
from tests.search_fixtures import codes, coding, dates, names, store, systems, wipe

BASE = "http://test.local/fhir"

# -- values -----------------------------------------------------------------------------
displays = st.sampled_from(["Blood pressure", "blood sugar", "Élan", None])
references = st.sampled_from([
    {"reference": "Organization/o1"}, {"reference": "Organization/o2"},
    {"reference": "Patient/p1"}, {"reference": "Practitioner/o1"},
    {"reference": f"{BASE}/Organization/o1"}, {"reference": "http://other.org/fhir/Organization/o1"},
    {"reference": "Organization/o1/_history/2"},
    {"identifier": {"system": "http://s1", "value": "a"}},
    {"reference": "Organization/o2", "identifier": {"system": "http://s2", "value": "b"}},
])
uris = st.sampled_from(["http://ex.org/q", "http://ex.org/q/a", "http://ex.org/q/a/b",
                        "http://ex.org/r"])
PREFIXES = ["", "eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


def maybe(draw, strategy):
    return draw(strategy) if draw(st.booleans()) else None


# -- resources --------------------------------------------------------------------------------
@st.composite
def task(draw, i):
    t = {"resourceType": "Task", "id": f"r{i}", "intent": "order",
         "status": draw(st.sampled_from(["requested", "accepted", "completed"]))}
    for key, strategy in (("owner", references), ("focus", references),
                          ("authoredOn", dates)):
        if (value := maybe(draw, strategy)) is not None:
            t[key] = value
    if draw(st.booleans()):
        t["for"] = {"reference": draw(st.sampled_from(["Patient/p1", "Patient/p2",
                                                       "Group/p1"]))}
    if draw(st.booleans()):
        t["code"] = {"coding": [coding(draw(systems), draw(codes), draw(displays))]}
        if draw(st.booleans()):
            t["code"]["text"] = draw(st.sampled_from(["Blood test", "Referral"]))
    return t


@st.composite
def patient(draw, i):
    p = {"resourceType": "Patient", "id": f"r{i}"}
    if draw(st.booleans()):
        p["name"] = [{"family": draw(names), "given": draw(st.lists(names, max_size=2))}]
    if (birth := maybe(draw, dates)) is not None:
        p["birthDate"] = birth.split("T")[0]
    if draw(st.booleans()):
        p["gender"] = draw(st.sampled_from(["male", "female", "other"]))
    if draw(st.booleans()):
        ident = {"system": draw(st.sampled_from(["http://s1", "http://s2"])),
                 "value": draw(codes)}
        if draw(st.booleans()):
            ident["type"] = {"coding": [coding("http://t", draw(st.sampled_from(["MR", "SS"])))]}
        p["identifier"] = [ident]
    if draw(st.booleans()):
        p["address"] = [{"city": draw(names)}]
    if (gp := maybe(draw, references)) is not None:
        p["generalPractitioner"] = [gp]
    return p


@st.composite
def observation(draw, i):
    o = {"resourceType": "Observation", "id": f"r{i}", "status": "final",
         "code": {"coding": [coding(draw(systems), draw(codes), draw(displays))
                             for _ in range(draw(st.integers(1, 2)))]}}
    if draw(st.booleans()):
        unit = draw(st.sampled_from(["mg", "kg"]))
        o["valueQuantity"] = {"value": draw(st.sampled_from([0, 1.5, 5, 5.25, 12, 20])),
                              "unit": unit}
        if draw(st.booleans()):  # coded: the unit text may differ from the code
            o["valueQuantity"].update(system="http://unitsofmeasure.org", code=unit,
                                      unit=draw(st.sampled_from([unit, "milligram"])))
    if draw(st.booleans()):
        o["effectiveDateTime"] = draw(dates)
    elif draw(st.booleans()):
        o["effectivePeriod"] = {k: draw(dates) for k in draw(st.sampled_from(
            [("start",), ("end",), ("start", "end")]))}
    if draw(st.booleans()):
        o["subject"] = {"reference": draw(st.sampled_from(["Patient/p1", "Patient/p2"]))}
    return o


@st.composite
def risk_assessment(draw, i):
    r = {"resourceType": "RiskAssessment", "id": f"r{i}", "status": "final",
         "subject": {"reference": "Patient/p1"}}
    if draw(st.booleans()):
        r["prediction"] = [{"probabilityDecimal": draw(st.sampled_from(
            [0.1, 0.25, 0.3, 0.5, 0.55, 0.9]))}]
    return r


@st.composite
def location(draw, i):
    loc = {"resourceType": "Location", "id": f"r{i}"}
    if draw(st.booleans()):
        loc["name"] = draw(names)
    if draw(st.booleans()):
        loc["position"] = {"latitude": draw(st.sampled_from([45.0, 45.05, 45.5, 46.0])),
                           "longitude": draw(st.sampled_from([-73.0, -73.05, -74.0]))}
    return loc


@st.composite
def questionnaire(draw, i):
    q = {"resourceType": "Questionnaire", "id": f"r{i}", "status": "active"}
    if draw(st.booleans()):
        q["url"] = draw(uris)
    if draw(st.booleans()):
        q["version"] = draw(st.sampled_from(["1", "2"]))
    return q


GEN = {"Task": task, "Patient": patient, "Observation": observation,
       "RiskAssessment": risk_assessment, "Location": location, "Questionnaire": questionnaire}


# -- queries ----------------------------------------------------------------------------------
def _list(draw, one) -> str:
    return ",".join(draw(st.lists(one, min_size=1, max_size=2)))


def _prefixed(values):
    return st.tuples(st.sampled_from(PREFIXES), values).map("".join)


TOKEN = st.one_of(codes, st.tuples(st.sampled_from(["http://s1", ""]), codes).map("|".join),
                  st.just("http://s2|"))
REFERENCE = st.sampled_from(["Organization/o1", "o1", "Patient/p1", f"{BASE}/Organization/o1",
                             "http://other.org/fhir/Organization/o1", "Organization/o2"])

# (resource type, parameter) -> modifier -> value strategy
QUERIES = {
    ("Task", "status"): {"": st.sampled_from(["requested", "completed"]), ":not":
                         st.sampled_from(["requested", "completed"])},
    ("Task", "code"): {"": TOKEN, ":not": TOKEN, ":text": st.sampled_from(
        ["blood", "ref", "élan", "sugar"])},
    ("Task", "owner"): {"": REFERENCE, ":Organization": st.sampled_from(["o1", "o2"]),
                        ":identifier": st.sampled_from(["http://s1|a", "b", "http://s2|"])},
    ("Task", "focus"): {"": REFERENCE},
    ("Task", "patient"): {"": st.sampled_from(["Patient/p1", "p1", "p2"])},
    ("Task", "authored-on"): {"": _prefixed(dates)},
    ("Task", "_id"): {"": st.sampled_from(["r0", "r1", "r2"])},
    ("Task", "_lastUpdated"): {"": _prefixed(dates)},
    ("Patient", "name"): {"": st.sampled_from(["elo", "Éloïse", "mar", "anne", "ann", "ri"]),
                          ":exact": names, ":contains": st.sampled_from(["lo", "ar", "e m"])},
    ("Patient", "address-city"): {"": st.sampled_from(["elo", "mark"])},
    ("Patient", "birthdate"): {"": _prefixed(dates)},
    ("Patient", "gender"): {"": st.sampled_from(["male", "female"]),
                            ":not": st.sampled_from(["male", "female"])},
    ("Patient", "identifier"): {"": TOKEN, ":of-type": st.sampled_from(
        ["http://t|MR|a", "http://t|SS|b", "http://t|MR|c"])},
    ("Patient", "general-practitioner"): {"": REFERENCE},
    ("Observation", "code"): {"": TOKEN, ":text": st.sampled_from(["blood", "élan", "b"])},
    ("Observation", "value-quantity"): {"": st.one_of(
        _prefixed(st.sampled_from(["5", "5.2", "12", "0", "1.5"])),
        st.sampled_from(["5|http://unitsofmeasure.org|mg", "gt1|http://unitsofmeasure.org|kg",
                         "le12||mg", "5||kg"]))},
    ("Observation", "date"): {"": _prefixed(dates)},
    ("Observation", "subject"): {"": st.sampled_from(["Patient/p1", "p2"])},
    ("Observation", "code-value-quantity"): {"": st.tuples(
        st.sampled_from(["a", "http://s1|b", "c"]),
        _prefixed(st.sampled_from(["5", "12"]))).map("$".join)},
    ("RiskAssessment", "probability"): {"": _prefixed(st.sampled_from(
        ["0.5", "0.25", "0.3", "0.9", "1"]))},
    ("Location", "near"): {"": st.sampled_from(["45.0|-73.0|10|km", "45.0|-73.0|1|km",
                                               "46|-74|100|km", "45.5|-73.5|30000|m"])},
    ("Location", "name"): {"": st.sampled_from(["elo", "mar"]),
                           ":exact": st.sampled_from(["Elo", "Mark"])},
    ("Questionnaire", "url"): {"": uris, ":below": uris, ":above": uris},
    ("Questionnaire", "version"): {"": st.sampled_from(["1", "2"])},
}


CASES = sorted({(rt, code, modifier) for (rt, code), mods in QUERIES.items() for modifier in mods}
               | {(rt, code, ":missing") for rt, code in QUERIES
                  if code not in ("_id", "_lastUpdated")}
               | {("Observation", "component-code-value-quantity", ":missing")})


def _value(draw, rt: str, code: str, modifier: str) -> str:
    if modifier == ":missing":
        return draw(st.sampled_from(["true", "false"]))
    strategy = QUERIES[(rt, code)][modifier]
    single = code in ("near", "code-value-quantity")
    return draw(strategy) if single else _list(draw, strategy)


@pytest.mark.parametrize("rt, code, modifier", CASES,
                         ids=[f"{rt}-{code}{mod}" for rt, code, mod in CASES])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_matcher_agrees_with_sql_search(database, rt, code, modifier, data):
    """One clause of every supported kind, sometimes AND-ed with a second random one."""
    from fhir_server.interactions.search import search_bundle

    items = [data.draw(GEN[rt](i)) for i in range(data.draw(st.integers(1, 8)))]
    stamps = [date_range(data.draw(dates))[0] + i for i in range(len(items))]
    query = [(f"{code}{modifier}", _value(data.draw, rt, code, modifier))]
    if data.draw(st.integers(0, 3)) == 0:
        other = data.draw(st.sampled_from([c for c in CASES if c[0] == rt]))
        query.append((f"{other[1]}{other[2]}", _value(data.draw, *other)))
    with database.write() as conn:
        wipe(conn)
        for item, stamp in zip(items, stamps, strict=True):
            store(conn, item, last_updated=stamp)
    with database.read() as conn:
        bundle = search_bundle(conn, rt, query + [("_count", "1000")], base_url=BASE,
                               strict=True)
        bodies = conn.execute(select(resources_table.c.body)).scalars().all()
    from_sql = sorted(e["resource"]["id"] for e in bundle.get("entry", []))
    criteria = match.criteria(rt, query, base_url=BASE)
    in_memory = sorted(b["id"] for b in map(json.loads, bodies) if match.matches(b, criteria))
    assert in_memory == from_sql, (query, items)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rt=st.sampled_from(["Task", "Observation", "Patient"]), data=st.data())
def test_patient_compartment_agrees_with_compartment_search(database, rt, data):
    from fhir_server.interactions.search import search_bundle

    items = [data.draw(GEN[rt](i)) for i in range(data.draw(st.integers(1, 6)))]
    if rt == "Patient":
        items[0]["id"] = "p1"
    with database.write() as conn:
        wipe(conn)
        for item in items:
            store(conn, item)
    with database.read() as conn:
        bundle = search_bundle(conn, rt, [("_count", "1000")], base_url=BASE, strict=True,
                               compartment=("Patient", "p1"))
    from_sql = sorted(e["resource"]["id"] for e in bundle.get("entry", []))
    in_memory = sorted(i["id"] for i in items if match.in_patient_compartment(i, "p1"))
    assert in_memory == from_sql


@pytest.mark.parametrize("query", [
    "owner.name=x", "_has:Task:owner:status=requested", "code:in=http://vs",
    "code:not-in=http://vs",
])
def test_unsupported_criteria_are_refused(query):
    res_type = "Organization" if query.startswith("_has") else "Task"
    with pytest.raises(match.Unsupported):
        match.criteria(res_type, query)


def test_unknown_and_malformed_criteria_are_errors():
    from fhir_server.errors import FhirError

    for query in ("no-such=1", "authored-on=yesterday", "status"):
        with pytest.raises(FhirError) as caught:
            match.criteria("Task", query)
        assert caught.value.status == 400
