"""The R4 specification's own examples (tests/data/fhir-r4/r4-examples.json.gz) are the valid
side: each validates with no error, except the few that break an R4 rule (listed with the
rule). The invalid side is a corpus of those examples broken one rule at a time, one kind per
miss of the reference-validator comparison; the catch rate is printed and must be 100 % on
this corpus, with no false positive on the valid side."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from profiles.base_r4 import validate_base
from tests.reference_data import r4_examples

# Examples that break an R4 rule, with the expression of the error (checked).
KNOWN_INVALID = {
    "ActivityDefinition-blood-tubes-supply.json": "ActivityDefinition.text.div",  # txt-2
    "ActivityDefinition-heart-valve-replacement.json": "ActivityDefinition.text.div",
    "EventDefinition-example.json": "EventDefinition.text.div",  # empty narrative
    "Questionnaire-zika-virus-exposure-assessment.json": "Questionnaire.text.div",
    "Bundle-10bb101f-a121-4264-a920-67be9cb82c74.json": "Bundle.entry[2].fullUrl",  # pat12/pat2
    "Bundle-3a0707d3-549e-4467-b8b8-5a2ab3800efe.json": "Bundle.entry[3].fullUrl",
    "Bundle-lri-example.json": "Bundle.entry[1].fullUrl",  # fullUrl id != resource id
    "Bundle-hla-1.json": "Bundle.entry[0].resource.extension[1].extension[1]",  # 'uri' vs 'url'
    "DeviceMetric-example.json": "DeviceMetric.parent",  # Reference(Device), not DeviceDefinition
    "DeviceUseStatement-example.json": "DeviceUseStatement.reasonReference[0]",  # Procedure
    "MedicationRequest-medrx0301.json": "MedicationRequest.dispenseRequest.performer",
    "Observation-clinical-gender.json": "Observation.performer[0]",  # an Encounter
    "Questionnaire-qs1.json": "Questionnaire.item[0].item[0].linkId",  # linkId 1..1
    "CodeSystem-dicom-dcim.json": "CodeSystem.concept[180].extension[0]",  # ValueSet-only ext
    "SearchParameter-codesystem-extensions-CodeSystem-author.json": "SearchParameter.base",
    # US Core's ethnicity extension (shipped) used with a value[x], on an Observation
    "Observation-example-genetics-brcapat.json": "Observation.extension[1]",
}


def _errors(resource: dict) -> list[tuple[str, str]]:
    return [(i.expression[0] if i.expression else "", i.diagnostics)
            for i in validate_base(resource) if i.severity == "error"]


@pytest.fixture(scope="module")
def examples() -> dict[str, Any]:
    return r4_examples()


def test_examples_validate_without_errors(examples):
    assert len(examples) >= 900
    failures = {}
    for name, resource in examples.items():
        errors = _errors(resource)
        if name in KNOWN_INVALID:
            assert any(expr == KNOWN_INVALID[name] for expr, _m in errors), (name, errors)
        elif errors:
            failures[name] = errors[:3]
    assert failures == {}


# -- the invalid side: each example of a kind broken by one rule --------------------------------
def _first(node: Any, test: Callable[[Any], bool]) -> Any:
    """The first object in the tree (depth first) that passes `test`."""
    if isinstance(node, dict):
        if test(node):
            return node
        values = node.values()
    elif isinstance(node, list):
        values = node
    else:
        return None
    for value in values:
        found = _first(value, test)
        if found is not None:
            return found
    return None


def _empty_array(r: dict) -> bool:
    target = _first(r, lambda n: isinstance(n.get("coding"), list) and n["coding"])
    if target is None:
        return False
    target["coding"] = []
    return True


def _empty_object(r: dict) -> bool:
    target = _first(r, lambda n: isinstance(n.get("coding"), list) and n["coding"])
    if target is None:
        return False
    target["coding"][0] = {}
    return True


def _bad_date(r: dict) -> bool:
    if "birthDate" not in r:
        return False
    r["birthDate"] = "2013-04-31"
    return True


def _string_boolean(r: dict) -> bool:
    if not isinstance(r.get("active"), bool):
        return False
    r["active"] = "true"
    return True


def _unknown_element(r: dict) -> bool:
    r["colour"] = "blue"
    return True


def _bad_code(r: dict) -> bool:
    if not isinstance(r.get("status"), str):
        return False
    r["status"] = r["status"] + "-x"
    return True


def _element_id_space(r: dict) -> bool:
    target = _first(r, lambda n: "coding" in n and "resourceType" not in n)
    if target is None:
        return False
    target["id"] = "has space"
    return True


def _ext_value_type(r: dict) -> bool:
    r.setdefault("extension", []).append({
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "valueString": "Boston"})
    return r["resourceType"] == "Patient"


def _ext_context(r: dict) -> bool:
    r.setdefault("extension", []).append({
        "url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
        "valueAddress": {"city": "Boston"}})
    return r["resourceType"] != "Patient"


def _ext_value_and_children(r: dict) -> bool:
    r.setdefault("extension", []).append({
        "url": "http://example.org/x", "valueString": "x",
        "extension": [{"url": "a", "valueString": "y"}]})
    return True


def _narrative_script(r: dict) -> bool:
    if not isinstance(r.get("text"), dict):
        return False
    r["text"]["div"] = ('<div xmlns="http://www.w3.org/1999/xhtml"><p>x</p>'
                        '<script>alert(1)</script></div>')
    return True


def _narrative_empty(r: dict) -> bool:
    if not isinstance(r.get("text"), dict):
        return False
    r["text"]["div"] = '<div xmlns="http://www.w3.org/1999/xhtml"> </div>'
    return True


def _dangling_contained(r: dict) -> bool:
    r.setdefault("contained", []).append({"resourceType": "Basic", "id": "unused",
                                          "code": {"text": "x"}})
    return r["resourceType"] not in ("Bundle", "Parameters", "Binary")


def _bad_base64(r: dict) -> bool:
    target = _first(r, lambda n: isinstance(n.get("data"), str) and "contentType" in n)
    if target is None:
        return False
    target["data"] = target["data"][:8] + "." + target["data"][8:]
    return True


def _full_url_mismatch(r: dict) -> bool:
    for entry in r.get("entry") or []:
        res = entry.get("resource") or {}
        if str(entry.get("fullUrl", "")).startswith("http") and res.get("id"):
            entry["fullUrl"] = entry["fullUrl"].rsplit("/", 1)[0] + "/other-id"
            return True
    return False


def _link_relation(r: dict) -> bool:
    if r["resourceType"] != "Bundle":
        return False
    r["link"] = [{"relation": "nextpage", "url": "http://example.org/fhir/x"}]
    return True


def _reference_target(r: dict) -> bool:
    if r["resourceType"] != "Observation" or "subject" not in r:
        return False
    r["subject"] = {"reference": "Medication/m1"}
    return True


MUTATIONS: dict[str, Callable[[dict], bool]] = {
    "empty array": _empty_array, "empty object": _empty_object, "calendar date": _bad_date,
    "boolean as string": _string_boolean, "unknown element": _unknown_element,
    "required code": _bad_code, "element id with space": _element_id_space,
    "core extension value type": _ext_value_type, "core extension context": _ext_context,
    "ext-1": _ext_value_and_children, "txt-1 script": _narrative_script,
    "txt-2 empty narrative": _narrative_empty, "dom-3 unreferenced contained": _dangling_contained,
    "base64": _bad_base64, "fullUrl names another resource": _full_url_mismatch,
    "IANA link relation": _link_relation, "reference target type": _reference_target,
}
PER_RULE = 12


def corpus(examples: dict[str, Any]) -> list[tuple[str, str, dict]]:
    """(rule, example, broken resource) for up to PER_RULE valid examples per rule."""
    out = []
    valid = [(n, r) for n, r in sorted(examples.items())
             if n not in KNOWN_INVALID and r.get("resourceType") != "StructureDefinition"]
    for rule, mutate in MUTATIONS.items():
        made = 0
        for name, resource in valid:
            broken = copy.deepcopy(resource)
            if mutate(broken):
                out.append((rule, name, broken))
                made += 1
                if made == PER_RULE:
                    break
    return out


def test_invalid_corpus_is_caught(examples):
    cases = corpus(examples)
    assert len(cases) >= 150
    missed = [(rule, name) for rule, name, broken in cases if not _errors(broken)]
    rate = 1 - len(missed) / len(cases)
    print(f"invalid corpus: {len(cases)} cases over {len(MUTATIONS)} rules, caught "
          f"{rate:.1%}; valid side: {len(examples) - len(KNOWN_INVALID)} examples, "
          "0 false positives")
    assert missed == []
