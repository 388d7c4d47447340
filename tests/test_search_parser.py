"""The search query parser: every rule pinned, over HTTP for the defects, pure for the rest.

Over HTTP: `_id:not`, quantity units, number parameters, malformed `_include` values and
modifiers, `_has` outside a type search, malformed references; each error is a 400
OperationOutcome with code and expression. Pure: the result-control parameters, modifiers,
value syntax per type, chains and `_has`.
"""

from __future__ import annotations

import pytest

from fhir_server.errors import FhirError
from fhir_server.search.parser import (
    DEFAULT_COUNT,
    MAX_COUNT,
    ChainFilter,
    HasFilter,
    MissingFilter,
    ParamFilter,
    parse_search,
)
from fhir_server.search.registry import get_param
from fhir_server.search.terms import (
    CompositeValue,
    DateValue,
    NearValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
)
from tests.samples import sample

UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


# --------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def seeded(server):
    """Two patients, a PHQ-9 total of 15.5 {score} for the first, a RiskAssessment of 0.4."""
    p1 = server.post("Patient", sample("Patient")).json()["id"]
    p2 = server.post("Patient", sample("Patient")).json()["id"]
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": LOINC, "code": "44261-6"}]},
           "subject": {"reference": f"Patient/{p1}"},
           "valueQuantity": {"value": 15.5, "unit": "{score}", "system": UCUM,
                             "code": "{score}"}}
    o1 = server.post("Observation", obs).json()["id"]
    risk = {"resourceType": "RiskAssessment", "status": "final",
            "subject": {"reference": f"Patient/{p1}"},
            "prediction": [{"probabilityDecimal": 0.4}]}
    r1 = server.post("RiskAssessment", risk).json()["id"]
    return server, {"p1": p1, "p2": p2, "o1": o1, "r1": r1}


def _ids(server, query: str) -> list[str]:
    response = server.get(query)
    assert response.status_code == 200, response.text
    return sorted(e["resource"]["id"] for e in response.json().get("entry", [])
                  if e.get("search", {}).get("mode") != "outcome")


def _error(server, query: str, status: int = 400) -> dict:
    response = server.get(query)
    assert response.status_code == status, response.text
    issue = response.json()["issue"][0]
    return {"code": issue["code"], "expression": issue.get("expression")}


def test_id_not_returns_every_other_resource(seeded):
    server, ids = seeded
    everyone = _ids(server, "Patient?_count=100")
    assert ids["p1"] in everyone and ids["p2"] in everyone
    assert _ids(server, f"Patient?_id:not={ids['p1']}&_count=100") == sorted(
        i for i in everyone if i != ids["p1"])
    assert _ids(server, f"Patient?_id={ids['p1']}") == [ids["p1"]]
    both = f"{ids['p1']},{ids['p2']}"
    assert ids["p2"] not in _ids(server, f"Patient?_id:not={both}&_count=100")


def test_id_takes_no_other_modifier(seeded):
    server, ids = seeded
    assert _error(server, f"Patient?_id:exact={ids['p1']}") == {
        "code": "invalid", "expression": ["_id:exact"]}
    assert _error(server, "Patient?_lastUpdated:not=2020") == {
        "code": "invalid", "expression": ["_lastUpdated:not"]}


@pytest.mark.parametrize("value, found", [
    ("15.5", True),
    ("15.5|http://unitsofmeasure.org|{score}", True),
    ("15.5||{score}", True),
    ("15.5|http://unitsofmeasure.org|", True),
    ("15.5|http://unitsofmeasure.org|mg", False),
    ("15.5||mg", False),
    ("15.5|http://other.example|{score}", False),
    ("gt15", True),
    ("lt15", False),
    ("17", False),
])
def test_quantity_search_honours_system_and_unit(seeded, value, found):
    server, ids = seeded
    assert _ids(server, f"Observation?value-quantity={value}") == ([ids["o1"]] if found else [])


@pytest.mark.parametrize("value, found", [
    ("0.4", True), ("gt0.3", True), ("lt0.3", False), ("ge0.4", True), ("ne0.4", False),
    ("0.5", False), ("0.3,0.4", True),
])
def test_number_parameters_search(seeded, value, found):
    server, ids = seeded
    assert _ids(server, f"RiskAssessment?probability={value}") == ([ids["r1"]] if found else [])


def test_number_parameters_sort_and_reject_bad_numbers(seeded):
    server, ids = seeded
    assert _ids(server, "RiskAssessment?_sort=-probability") == [ids["r1"]]
    assert _error(server, "RiskAssessment?probability=abc") == {
        "code": "invalid", "expression": ["probability"]}
    assert _error(server, "RiskAssessment?probability=0.4.1") == {
        "code": "invalid", "expression": ["probability"]}


@pytest.mark.parametrize("name, value", [
    ("_include", "Observation"),
    ("_include", "Observation:"),
    ("_include", ":subject"),
    ("_include", ":"),
    ("_include", "Observation:subject:Patient:extra"),
    ("_include:", "Observation:subject"),
    ("_include:bogus", "Observation:subject"),
    ("_include:iterate:x", "Observation:subject"),
    ("_revinclude:recurse:", "Observation:subject"),
    ("_includes", "Observation:subject"),
])
def test_malformed_include_is_400(seeded, name, value):
    server, _ = seeded
    assert _error(server, f"Observation?{name}={value}") == {
        "code": "invalid", "expression": [name]}


def test_unknown_include_target_is_ignored_leniently_and_400_strictly(seeded):
    server, ids = seeded
    lenient = server.get("Observation?_include=Observation:subject:Bogus")
    assert lenient.status_code == 200
    outcome = [e["resource"] for e in lenient.json()["entry"]
               if e.get("search", {}).get("mode") == "outcome"]
    assert outcome and "_include" in outcome[0]["issue"][0]["diagnostics"]
    strict = server.get("Observation?_include=Observation:subject:Bogus",
                        headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["code"] == "not-supported"
    assert strict.json()["issue"][0]["expression"] == ["_include"]
    included = _ids(server, "Observation?_include=Observation:subject")
    assert included == sorted([ids["o1"], ids["p1"]])
    assert _ids(server, "Observation?_include:iterate=Observation:subject") == included


@pytest.mark.parametrize("query, expression", [
    ("?_has:Observation:subject:code=44261-6", "_has:Observation:subject:code"),
    ("Patient?_has=x", "_has"),
    ("Patient?_has:Observation:subject=x", "_has:Observation:subject"),
    ("Patient?_has:Bogus:subject:code=x", "_has:Bogus:subject:code"),
    ("Patient?_has:Observation:bogus:code=x", "_has:Observation:bogus:code"),
    ("Patient?_has:Observation:subject:code:bogus=x", "_has:Observation:subject:code:bogus"),
    ("Patient?_has:Observation:specimen:code=x", "_has:Observation:specimen:code"),
])
def test_malformed_has_is_400(seeded, query, expression):
    server, _ = seeded
    assert _error(server, query) == {"code": "invalid", "expression": [expression]}


def test_has_on_a_type_search_matches(seeded):
    server, ids = seeded
    assert _ids(server, "Patient?_has:Observation:subject:code=44261-6") == [ids["p1"]]
    assert _ids(server, "Patient?_has:Observation:subject:code=1-8") == []


@pytest.mark.parametrize("value", [
    "Patient/", "/", "Patient/a b", "Patient/%20", ":", "Patient/x/_history/",
    "Patient/a/b", "Bogus/1", "a/b/c/d", "Patient/x/_history/1/2", "Patient/" + "a" * 65,
])
def test_malformed_reference_values_are_400(seeded, value):
    server, _ = seeded
    assert _error(server, f"Observation?subject={value}") == {
        "code": "invalid", "expression": ["subject"]}


def test_reference_forms_that_match(seeded):
    server, ids = seeded
    o1, p1 = ids["o1"], ids["p1"]
    for value in (f"Patient/{p1}", p1, f"Patient/{p1}/_history/1",
                  f"{server.base}/Patient/{p1}"):
        assert _ids(server, f"Observation?subject={value}") == [o1], value
    assert _ids(server, f"Observation?subject:Patient={p1}") == [o1]
    assert _error(server, f"Observation?subject:Group=Patient/{p1}") == {
        "code": "invalid", "expression": ["subject:Group"]}
    assert _error(server, "Observation?subject.name:bogus=x") == {
        "code": "invalid", "expression": ["subject.name:bogus"]}


# --------------------------------------------------------------------------- pure


def parse(res_type: str | None, query: str, *, strict: bool = False, base: str | None = None):
    params = [tuple(p.split("=", 1)) for p in query.split("&") if p]
    return parse_search(res_type, params, strict=strict, base_url=base)


def bad(res_type: str | None, query: str, *, strict: bool = False) -> FhirError:
    with pytest.raises(FhirError) as err:
        parse(res_type, query, strict=strict)
    return err.value


def only(res_type: str, query: str):
    parsed = parse(res_type, query, strict=True)
    assert len(parsed.filters) == 1
    return parsed.filters[0]


def test_count_total_summary_elements_cursor():
    assert parse("Patient", "").count == DEFAULT_COUNT
    assert parse("Patient", "_count=5").count == 5
    assert parse("Patient", "_count=0").count == 0
    assert parse("Patient", f"_count={MAX_COUNT + 5}").count == MAX_COUNT
    for query in ("_count=x", "_count=-1", "_total=all", "_summary=maybe"):
        err = bad("Patient", query)
        assert (err.status, err.code) == (400, "invalid")
        assert err.issues[0].expression == [query.split("=")[0]]
    for mode in ("none", "estimate", "accurate"):
        assert parse("Patient", f"_total={mode}").total == mode
    for mode in ("true", "false", "text", "data", "count"):
        assert parse("Patient", f"_summary={mode}").summary == mode
    parsed = parse("Patient", "_elements=name, gender,,&_cursor=abc&_format=json&_pretty=true")
    assert parsed.elements == ("name", "gender")
    assert parsed.cursor == "abc"
    assert parsed.self_params == [("_elements", "name, gender,,")]
    assert parsed.filters == [] and parsed.ignored == []


def test_sort_keys():
    keys = parse("Patient", "_sort=-birthdate,_id,,-_lastUpdated,name").sort
    assert [(k.code, k.param_type, k.descending) for k in keys] == [
        ("birthdate", "date", True), ("_id", "column", False),
        ("_lastUpdated", "column", True), ("name", "string", False)]
    lenient = parse("Patient", "_sort=bogus,gender")
    assert [k.code for k in lenient.sort] == ["gender"]
    assert lenient.ignored == [("_sort", "bogus", "unknown or unsortable parameter")]
    err = bad("Patient", "_sort=bogus", strict=True)
    assert (err.status, err.code, err.issues[0].expression) == (400, "not-supported", ["_sort"])
    assert bad("Observation", "_sort=code-value-quantity", strict=True).code == "not-supported"
    assert [k.code for k in parse(None, "_type=Patient,Practitioner&_sort=name").sort] == [
        "name"]
    assert parse(None, "_type=Patient,Observation&_sort=name").sort == []


def test_unknown_parameters_lenient_and_strict():
    lenient = parse("Patient", "bogus=1&gender=male")
    assert lenient.ignored == [("bogus", "1", "unknown parameter bogus")]
    assert lenient.self_params == [("gender", "male")]
    err = bad("Patient", "bogus=1", strict=True)
    assert (err.status, err.code, err.issues[0].expression) == (400, "not-supported", ["bogus"])
    assert bad("Patient", "_id.name=x", strict=True).code == "not-supported"
    assert parse("Patient", "_text=x").ignored[0][0] == "_text"


def test_system_search_types():
    parsed = parse(None, "_type=Patient,,Observation&_type=Patient&gender=male")
    assert parsed.types == ("Patient", "Observation")
    assert ("_type", "Patient,,Observation") in parsed.self_params
    assert parse(None, "").types is None
    err = bad(None, "_type=Patient,Bogus")
    assert (err.status, err.issues[0].expression) == (400, ["_type"])
    err = bad("Bogus", "")
    assert (err.status, err.code) == (404, "not-supported")
    assert isinstance(parse(None, "_id=x").filters[0], ParamFilter)
    assert parse(None, "gender=male").ignored  # not a parameter of every resource


def test_missing_modifier():
    flt = only("Patient", "gender:missing=true")
    assert isinstance(flt, MissingFilter) and flt.missing is True
    assert only("Patient", "gender:missing=false").missing is False
    err = bad("Patient", "gender:missing=yes")
    assert (err.code, err.issues[0].expression) == ("invalid", ["gender:missing"])
    assert bad("Patient", "gender:bogus=male").code == "invalid"
    assert bad("Patient", "gender=").code == "invalid"


@pytest.mark.parametrize("query, expected", [
    ("gender=male", TokenValue(None, "male", False)),
    ("identifier=http://mrn|1", TokenValue("http://mrn", "1", True)),
    ("identifier=|1", TokenValue(None, "1", True)),
    ("identifier=http://mrn|", TokenValue("http://mrn", None, True)),
    ("identifier=a\\|b", TokenValue(None, "a|b", False)),
    ("identifier:text=Medical Record", StringValue("medical record", "Medical Record")),
    ("identifier:of-type=http://t|MR|123", TokenValue("http://t|MR", "123", True)),
    ("language:in=http://vs", UriValue("http://vs")),
    ("language:not-in=http://vs", UriValue("http://vs")),
    ("name=Éloïse", StringValue("eloise", "Éloïse")),
    ("name:exact=Ann\\,a", StringValue("ann,a", "Ann,a")),
])
def test_patient_value_forms(query, expected):
    flt = only("Patient", query)
    assert isinstance(flt, ParamFilter) and flt.values == (expected,)
    assert flt.modifier == (query.split("=")[0].partition(":")[2] or None)
    assert flt.name == query.split("=")[0]


@pytest.mark.parametrize("query", [
    "identifier=a|b|c", "identifier=|", "identifier:of-type=a|b", "identifier:of-type=a||c",
    "identifier:of-type=a|b|", "birthdate=2020-13", "birthdate=xx2020",
])
def test_malformed_patient_values(query):
    err = bad("Patient", query)
    assert (err.status, err.code, err.issues[0].expression) == (
        400, "invalid", [query.split("=")[0]])


def test_or_values_and_dates():
    flt = only("Patient", "gender=male,female")
    assert flt.values == (TokenValue(None, "male", False), TokenValue(None, "female", False))
    (date,) = only("Patient", "birthdate=ge2020").values
    assert isinstance(date, DateValue) and date.prefix == "ge" and date.low < date.high
    (plain,) = only("Patient", "birthdate=2020").values
    assert plain.prefix == "eq"
    (updated,) = only("Patient", "_lastUpdated=lt2021-01-01").values
    assert isinstance(updated, DateValue) and updated.prefix == "lt"


def test_number_quantity_composite_uri_near():
    (num,) = only("RiskAssessment", "probability=gt0.40").values
    assert num == NumberValue("gt", 0.4, 0.395, 0.405)
    (qty,) = only("Observation", "value-quantity=le5.0|http://u|mg").values
    assert qty == QuantityValue("le", 5.0, 4.95, 5.05, "http://u", "mg")
    (qty,) = only("Observation", "value-quantity=5||mg").values
    assert (qty.prefix, qty.system, qty.code) == ("eq", None, "mg")
    (qty,) = only("Observation", "value-quantity=5").values
    assert (qty.system, qty.code) == (None, None)
    assert bad("Observation", "value-quantity=5|a|b|c").code == "invalid"
    (comp,) = only("Observation", "code-value-quantity=http://loinc.org|1-8$gt5").values
    assert isinstance(comp, CompositeValue)
    assert comp.parts[0] == TokenValue("http://loinc.org", "1-8", True)
    assert comp.parts[1].prefix == "gt"
    assert bad("Observation", "code-value-quantity=1-8").code == "invalid"
    assert only("Questionnaire", "url=http://x/Q|1").values == (UriValue("http://x/Q|1"),)
    (near,) = only("Location", "near=42|-71|2|mi").values
    assert near == NearValue(42.0, -71.0, 2 * 1.609344)
    assert only("Location", "near=42|-71").values == (NearValue(42.0, -71.0, 1.0),)
    assert only("Location", "near=42|-71||").values == (NearValue(42.0, -71.0, 1.0),)
    for bad_near in ("42", "91|0", "0|181", "-91|0", "0|-181", "1|1|1|parsec"):
        assert bad("Location", f"near={bad_near}").code == "invalid"
    assert bad("Location", "near-distance=1", strict=True).code == "not-supported"


def test_reference_values():
    base = "http://fhir.example.org/fhir"
    parsed = parse("Observation", f"subject={base}/Patient/p1", base=base + "/")
    assert parsed.filters[0].values == (
        ReferenceValue("Patient", "p1", f"{base}/Patient/p1", None, None),)
    assert only("Observation", "subject=Patient/p1").values == (
        ReferenceValue("Patient", "p1", None, None, None),)
    assert only("Observation", "subject=p1").values == (
        ReferenceValue(None, "p1", None, None, None),)
    assert only("Observation", "subject:Patient=p1").values == (
        ReferenceValue("Patient", "p1", None, None, None),)
    assert only("Observation", "subject=Patient/p1/_history/2").values == (
        ReferenceValue("Patient", "p1", None, None, None),)
    assert only("Observation", "subject=http://other/Patient/1|2").values == (
        ReferenceValue(None, None, "http://other/Patient/1", None, None),)
    assert only("Observation", "subject=urn:uuid:1").values == (
        ReferenceValue(None, None, "urn:uuid:1", None, None),)
    assert only("Observation", "subject:identifier=http://mrn|7").values == (
        ReferenceValue(None, None, None, "http://mrn", "7"),)
    err = bad("Observation", "subject:Group=Patient/p1")
    assert (err.code, err.issues[0].expression) == ("invalid", ["subject:Group"])


def test_chains():
    flt = only("Observation", "subject:Patient.name=Smith")
    assert isinstance(flt, ChainFilter) and list(flt.inner) == ["Patient"]
    assert flt.inner["Patient"].values == (StringValue("smith", "Smith"),)
    wide = only("Observation", "subject.name=Smith")
    assert sorted(wide.inner) == ["Location", "Patient"]  # the subject targets with a name
    via_id = only("Observation", "subject._id=p1")
    assert set(via_id.inner) == {"Patient", "Group", "Device", "Location"}
    nested = only("Observation", "subject:Patient._has:Observation:subject:code=1-8")
    assert isinstance(nested.inner["Patient"], HasFilter)
    deep = only("Task", "focus:Task.focus:Task.focus:Task.focus:Task._id=x")
    assert isinstance(deep, ChainFilter)
    for query, why in [
        ("gender.name=x", "not a reference parameter"),
        ("subject:Bogus.name=x", "unknown resource type"),
        ("subject.bogus=x", "no target type"),
        ("focus:Task.focus:Task.focus:Task.focus:Task.focus:Task._id=x", "chain too deep"),
    ]:
        res_type = "Patient" if query.startswith("gender") else (
            "Task" if query.startswith("focus") else "Observation")
        err = bad(res_type, query)
        assert err.code == "invalid" and why in err.diagnostics
        assert err.issues[0].expression == [query.split("=")[0]]


def test_has_filters():
    flt = only("Patient", "_has:Observation:subject:code=1-8")
    assert isinstance(flt, HasFilter)
    assert (flt.source_type, flt.param.code) == ("Observation", "subject")
    assert flt.inner.values == (TokenValue(None, "1-8", False),)
    inner = only("Patient", "_has:Observation:subject:_has:Provenance:target:agent=x")
    assert isinstance(inner.inner, HasFilter)
    assert isinstance(only("Patient", "_has:Observation:subject:_id=o1"), HasFilter)


def test_includes():
    parsed = parse("Observation", "_include=Observation:subject:Patient&"
                   "_revinclude:iterate=Provenance:target&_include=*&_include:recurse=*")
    forms = [(i.source_type, i.param, i.target_type, i.iterate, i.reverse)
             for i in parsed.includes]
    assert forms == [("Observation", "subject", "Patient", False, False),
                     ("Provenance", "target", None, True, True),
                     (None, None, None, False, False), (None, None, None, True, False)]
    assert [i.source_type for i in parsed.revincludes] == ["Provenance"]
    assert ("_include", "*") in parsed.self_params
    assert parse("Observation", "_include=Observation:*").includes[0].param is None
    for query, why in [
        ("_include=Bogus:subject", "unknown resource type Bogus"),
        ("_include=Patient:general-practitioner", "Patient is not a searched type"),
        ("_include=Observation:code", "Observation has no reference parameter code"),
        ("_include=Observation:subject:Bogus", "unknown target type Bogus"),
    ]:
        lenient = parse("Observation", query)
        assert lenient.includes == []
        assert lenient.ignored == [tuple(query.split("=", 1)) + ("unknown include",)]
        err = bad("Observation", query, strict=True)
        assert (err.status, err.code) == (400, "not-supported") and why in err.diagnostics
    assert parse("Observation", "_include:iterate=Patient:general-practitioner").includes
    assert parse(None, "_include=Patient:general-practitioner").includes
    assert parse("Observation", "_revinclude=Provenance:target").includes


def test_system_level_parameters_of_every_resource():
    for code in ("_tag", "_profile", "_security", "_source"):
        (flt,) = parse(None, f"{code}=x", strict=True).filters
        assert flt.param.code == code and flt.param.url.endswith(f"Resource-{code[1:]}")
    assert parse(None, "_lastUpdated=gt2020").filters[0].param.code == "_lastUpdated"
    assert bad(None, "name=x", strict=True).code == "not-supported"
    assert only("Observation", "_id=x").param == get_param("Observation", "_id")


def test_common_parameter_over_several_types_merges_targets():
    parsed = parse(None, "_type=Observation,Condition&subject.name=Smith", strict=True)
    assert sorted(parsed.filters[0].inner) == ["Location", "Patient"]
    merged = parse(None, "_type=Observation,Condition&subject=Patient/p1").filters[0].param
    assert set(merged.targets) == {"Group", "Device", "Patient", "Location"}
    assert parse(None, "_type=Patient,Observation&identifier=x").filters  # both have it
    assert parse(None, "_type=Patient,Practitioner&name=x").filters[0].param.type == "string"
    assert parse(None, "_type=Patient,Observation&date=2020").ignored  # not on Patient


def test_has_and_chain_depth_limits():
    deep = "_has:Provenance:target:" * 4 + "agent=x"
    assert isinstance(only("Patient", deep), HasFilter)
    err = bad("Patient", "_has:Provenance:target:" * 5 + "agent=x")
    assert "chain too deep" in err.diagnostics
    assert err.issues[0].expression == ["_has:Provenance:target:" * 5 + "agent"]


def test_messages_of_the_parser():
    assert bad("Bogus", "").diagnostics == "Unknown resource type Bogus"
    assert bad("Patient", "bogus=1", strict=True).diagnostics == (
        "Unknown or unsupported search parameter 'bogus': unknown parameter bogus")
    assert bad("Location", "near=1|1|1|parsec").diagnostics == (
        "Invalid search parameter near='1|1|1|parsec': unknown distance unit parsec")
    assert bad("Patient", "_total=all").diagnostics == (
        "Invalid search parameter _total='all': expected none, estimate or accurate")
    assert only("Location", "near=0|-180").values == (NearValue(0.0, -180.0, 1.0),)
    assert only("Location", "near=-90|180").values == (NearValue(-90.0, 180.0, 1.0),)
    assert only("Observation", "subject:Patient=Patient/p1").values == (
        ReferenceValue("Patient", "p1", None, None, None),)


def test_more_parser_messages():
    assert bad("Patient", "_sort=bogus", strict=True).diagnostics == "Cannot sort on 'bogus'"
    assert bad("Patient", "_has:Bogus:subject:code=x").diagnostics == (
        "Invalid search parameter _has:Bogus:subject:code='x': unknown resource type Bogus")
    assert bad("Patient", "_has:Observation:bogus:code=x").diagnostics == (
        "Invalid search parameter _has:Observation:bogus:code='x': Observation has no "
        "reference parameter bogus")


def test_merged_definition_keeps_the_first_types_fields():
    import dataclasses
    merged = parse(None, "_type=Observation,Condition&subject=Patient/p1").filters[0].param
    own = get_param("Observation", "subject")
    assert merged == dataclasses.replace(own, targets=merged.targets)


def test_modifier_chain_and_depth_messages():
    assert bad("Patient", "gender:bogus=male").diagnostics == (
        "Invalid search parameter gender:bogus='male': modifier :bogus is not supported on "
        "token")
    assert bad("Patient", "_id:exact=x").diagnostics == (
        "Invalid search parameter _id:exact='x': modifier :exact is not supported on _id")
    assert parse("Patient", "_id.name=x").ignored == [
        ("_id.name", "x", "chain not supported on _id")]
    assert bad("Patient", "_has:Provenance:target:" * 5 + "agent=x").diagnostics == (
        "Invalid search parameter agent='x': chain too deep")
