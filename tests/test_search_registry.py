"""Registry, extraction and value handling: pure, no database."""

from __future__ import annotations

import json

import pytest

from fhir_server.errors import FhirError
from fhir_server.search.capability import (
    capability_search_params,
    supported_includes,
    supported_revincludes,
)
from fhir_server.search.extract import extract_index
from fhir_server.search.parser import ChainFilter, HasFilter, parse_search
from fhir_server.search.registry import all_resource_types, params_for, patient_compartment
from fhir_server.search.values import date_range, decimal_range, normalize_string, parse_decimal
from tests.reference_data import GRAVITY_EXAMPLES, search_parameters


def test_registry_covers_every_r4_search_parameter():
    bundle = search_parameters()
    unsupported = {"_text", "_content", "_query", "_list", "_filter", "_has", "_type"}
    missing = []
    for e in bundle["entry"]:
        sp = e["resource"]
        if sp["code"] in unsupported:
            continue
        for base in sp["base"]:
            types = all_resource_types() if base in ("Resource", "DomainResource") else [base]
            for t in types:
                if sp["code"] not in params_for(t):
                    missing.append((t, sp["code"]))
    assert len(all_resource_types()) == 147
    # Documented gaps: Bundle parameters over entry resources (not stored on their own)
    # and composites whose components use %resource.
    assert sorted(missing) == [("Bundle", "composition"), ("Bundle", "message"),
                               ("MolecularSequence", "chromosome-variant-coordinate"),
                               ("MolecularSequence", "referenceseqid-variant-coordinate")]


def test_gravity_parameters_and_compartment():
    output = params_for("Task")["output"]
    assert output.type == "reference"
    assert output.url.endswith("SearchParameter/Task-output-reference")
    assert params_for("ServiceRequest")["supporting-info"].type == "reference"
    assert patient_compartment()["Task"] == ["patient", "focus"]
    assert "subject" in patient_compartment()["Observation"]


def test_extraction_of_gravity_task_example():
    task = json.loads((GRAVITY_EXAMPLES / "Task-SDOHCC-TaskReferralManagement"
                       "OrderFulfillmentCompletedExample.json").read_text())
    iv = extract_index(task)
    refs = {(p, t, i) for p, _g, t, i, *_ in iv.references}
    focus = task["focus"]["reference"].split("/")
    assert ("focus", focus[0], focus[1]) in refs
    assert ("status", 0, None, task["status"], None) in iv.tokens
    profiles = [u for p, _g, u in iv.uris if p == "_profile"]
    assert profiles == task["meta"]["profile"]
    outputs = {(t, i) for p, _g, t, i, *_ in iv.references if p == "output"}
    assert outputs == {tuple(o["valueReference"]["reference"].split("/"))
                       for o in task["output"] if "valueReference" in o}


def test_extraction_handles_choice_types_codings_and_composites():
    obs = {"resourceType": "Observation", "id": "x", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6",
                                "display": "PHQ-9 Total"}], "text": "Dépression"},
           "subject": {"reference": "Patient/1"},
           "effectivePeriod": {"start": "2024-01-01", "end": "2024-01-31"},
           "valueQuantity": {"value": 12, "system": "http://unitsofmeasure.org",
                             "code": "{score}"},
           "component": [{"code": {"coding": [{"code": "a"}]}, "valueQuantity": {"value": 1}},
                         {"code": {"coding": [{"code": "b"}]}}]}
    iv = extract_index(obs)
    assert ("code", 0, "http://loinc.org", "44261-6", "depression") in iv.tokens
    assert ("code", 0, "http://loinc.org", "44261-6", "phq-9 total") in iv.tokens
    dates = [d for d in iv.dates if d[0] == "date"]
    assert dates == [("date", 0, date_range("2024-01-01")[0], date_range("2024-01-31")[1])]
    assert ("value-quantity", 0, 12.0, "http://unitsofmeasure.org", "{score}", None) \
        in iv.quantities
    # one composite group per component that has both a code and a quantity value
    groups = {g for p, g, *_ in iv.tokens if p == "component-code-value-quantity$0"}
    assert len(groups) == 1
    patient = {"resourceType": "Patient", "id": "p", "deceasedBoolean": True,
               "name": [{"family": "Núñez", "given": ["Ana", "María"]}]}
    piv = extract_index(patient)
    assert ("deceased", 0, None, "true", None) in piv.tokens
    assert {s[2] for s in piv.strings if s[0] == "name"} == {"nunez", "ana", "maria"}


def test_extraction_of_a_typical_task():
    """What a referral Task puts in the index (its speed is measured by bench/, not here:
    a timed assertion failed under load on the shared 2-core machine)."""
    task = {"resourceType": "Task", "id": "t", "status": "requested", "intent": "order",
            "meta": {"profile": ["http://hl7.org/fhir/us/sdoh-clinicalcare/"
                                 "StructureDefinition/SDOHCC-TaskForReferralManagement"]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                 "code": "fulfill"}]},
            "focus": {"reference": "ServiceRequest/sr"}, "for": {"reference": "Patient/p"},
            "authoredOn": "2024-01-01T10:00:00Z", "requester": {"reference": "Organization/a"},
            "owner": {"reference": "Organization/b"}}
    index = extract_index(task)
    assert [(t[0], t[2], t[3]) for t in index.tokens] == [
        ("status", None, "requested"), ("intent", None, "order"),
        ("code", "http://hl7.org/fhir/CodeSystem/task-code", "fulfill")]
    assert [(r[0], r[2], r[3]) for r in index.references] == [
        ("focus", "ServiceRequest", "sr"), ("patient", "Patient", "p"),
        ("subject", "Patient", "p"), ("requester", "Organization", "a"),
        ("owner", "Organization", "b")]
    assert [d[0] for d in index.dates] == ["authored-on"]
    assert [u[2] for u in index.uris] == task["meta"]["profile"]


@pytest.mark.parametrize("text,low,high", [
    ("2024", "2024-01-01T00:00:00Z", "2025-01-01T00:00:00Z"),
    ("2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
    ("2024-12-31", "2024-12-31T00:00:00Z", "2025-01-01T00:00:00Z"),
    ("2024-05-01T10:00:00+02:00", "2024-05-01T08:00:00Z", "2024-05-01T08:00:01Z"),
])
def test_date_precision_ranges(text, low, high):
    assert date_range(text) == (date_range(low)[0], date_range(high)[0])


def test_values():
    assert normalize_string("  Ça   VA ") == "ca va"
    assert decimal_range(parse_decimal("100")) == (99.5, 100.5)
    assert decimal_range(parse_decimal("1.0")) == (0.95, 1.05)
    for bad in ("2024-13", "2024-02-30", "20240101", "2024-01-01T25:00"):
        with pytest.raises(ValueError):
            date_range(bad)


def test_parser_trees():
    p = parse_search("Task", [("patient.general-practitioner:Practitioner.name", "x"),
                              ("_has:Provenance:target:agent", "Practitioner/1"),
                              ("_count", "5000"), ("_total", "accurate"),
                              ("_elements", "status,owner")], strict=True)
    assert isinstance(p.filters[0], ChainFilter)
    inner = p.filters[0].inner["Patient"]
    assert isinstance(inner, ChainFilter) and list(inner.inner) == ["Practitioner"]
    assert isinstance(p.filters[1], HasFilter)
    assert p.count == 1000 and p.total == "accurate" and p.elements == ("status", "owner")
    lenient = parse_search("Task", [("nope", "1"), ("_sort", "nope")], strict=False)
    assert [i[0] for i in lenient.ignored] == ["nope", "_sort"]
    with pytest.raises(FhirError) as exc:
        parse_search("Task", [("_sort", "nope")], strict=True)
    assert exc.value.status == 400
    with pytest.raises(FhirError):
        parse_search("Task", [("_include", "Task:nope")], strict=True)


def test_capability_lists_working_parameters():
    params = {p["name"]: p for p in capability_search_params("Task")}
    assert params["owner"]["type"] == "reference"
    assert params["output"]["definition"].startswith("http://hl7.org/fhir/us/sdoh-clinicalcare")
    assert "_id" in params and "_lastUpdated" in params and "_text" not in params
    for name, p in params.items():  # every advertised parameter parses
        value = {"date": "2024", "number": "1", "quantity": "1", "reference": "x/1",
                 "composite": "$".join(["1"] * 3)}.get(p["type"], "a")
        if p["type"] == "reference":
            value = "Patient/1"
        if p["type"] == "composite":
            continue
        parse_search("Task", [(name, value)], strict=True)
    assert "Task:focus" in supported_includes("Task") and "Task:*" in supported_includes("Task")
    rev = supported_revincludes("ServiceRequest")
    assert "Task:focus" in rev and "Procedure:based-on" in rev
    assert "Observation:subject" not in supported_revincludes("Organization")
