"""Base R4 rules the validator enforces on every type (profiles/base_r4.py): the misses the
reference-validator comparison found, each with a resource that breaks the rule and one that
keeps it."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from profiles.base_r4 import validate_base
from tests.samples import changed

XHTML = "http://www.w3.org/1999/xhtml"


def errors(resource: dict[str, Any], **kwargs: Any) -> list[tuple[str, list[str], str]]:
    return [(i.code, i.expression, i.diagnostics) for i in validate_base(resource, **kwargs)
            if i.severity == "error"]


def narrative(div: str) -> dict[str, str]:
    return {"status": "generated", "div": div}


OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
PAT = {"resourceType": "Patient", "name": [{"family": "Rivera"}]}
RISK = {"resourceType": "RiskAssessment", "status": "final",
        "subject": {"reference": "Patient/p1"},
        "prediction": [{"outcome": {"text": "relapse"}, "probabilityDecimal": 20}]}
QUESTIONNAIRE = {"resourceType": "Questionnaire", "status": "draft", "item": [
    {"linkId": "1", "type": "boolean", "text": "a"},
    {"linkId": "2", "type": "boolean", "text": "b"},
    {"linkId": "3", "type": "string", "text": "c",
     "enableWhen": [{"question": "1", "operator": "=", "answerBoolean": True},
                    {"question": "2", "operator": "=", "answerBoolean": True}]}]}


# (label, valid resource, invalid resource, expected expression)
CASES = [
    ("ras-2 probability <= 100", RISK,
     changed(RISK, prediction=[{"outcome": {"text": "relapse"}, "probabilityDecimal": 101}]),
     "RiskAssessment.prediction[0]"),
    ("que-12 several enableWhen need enableBehavior",
     changed(QUESTIONNAIRE, item=QUESTIONNAIRE["item"][:2] + [
         {**QUESTIONNAIRE["item"][2], "enableWhen": QUESTIONNAIRE["item"][2]["enableWhen"] * 2,
          "enableBehavior": "all"}]),
     changed(QUESTIONNAIRE, item=QUESTIONNAIRE["item"][:2] + [
         {**QUESTIONNAIRE["item"][2],
          "enableWhen": QUESTIONNAIRE["item"][2]["enableWhen"] * 2}]),
     "Questionnaire.item[2]"),
    ("per-1 period start <= end", changed(OBS, effectivePeriod={"start": "2024-01-01",
                                                                "end": "2024-02-01"}),
     changed(OBS, effectivePeriod={"start": "2024-03-01", "end": "2024-02-01"}),
     "Observation.effective.ofType(Period)"),
    ("empty array", changed(OBS, code={"coding": [{"code": "a"}]}),
     changed(OBS, code={"coding": []}), "Observation.code.coding"),
    ("empty object", PAT, changed(PAT, name=[{}]), "Patient.name[0]"),
    ("base64 with a dot", {"resourceType": "Binary", "contentType": "text/plain",
                           "data": "YWJjZGVm"},
     {"resourceType": "Binary", "contentType": "text/plain", "data": "YWJj.ZGVm"},
     "Binary.data"),
    ("element id without spaces", changed(PAT, name=[{"id": "n1", "family": "R"}]),
     changed(PAT, name=[{"id": "n 1", "family": "R"}]), "Patient.name[0].id"),
    ("string at most 1 MB", changed(PAT, name=[{"family": "x" * 1000}]),
     changed(PAT, name=[{"family": "x" * (1024 * 1024 + 1)}]), "Patient.name[0].family"),
    ("boolean is a JSON boolean", changed(PAT, active=True), changed(PAT, active="true"),
     "Patient.active"),
    ("positiveInt >= 1", changed(OBS, effectiveTiming={"repeat": {"count": 1}}),
     changed(OBS, effectiveTiming={"repeat": {"count": 0}}),
     "Observation.effective.ofType(Timing).repeat.count"),
    ("calendar date", changed(PAT, birthDate="2012-02-29"), changed(PAT, birthDate="2013-04-31"),
     "Patient.birthDate"),
    ("ext-1 value or children", changed(PAT, extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
         "valueAddress": {"city": "Boston"}}]),
     changed(PAT, extension=[{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"}]),
     "Patient.extension[0]"),
    ("core extension value type", changed(PAT, extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
         "valueAddress": {"city": "Boston"}}]),
     changed(PAT, extension=[{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                              "valueString": "Boston"}]),
     "Patient.extension[0].value.ofType(string)"),
    ("core extension context", changed(PAT, extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
         "valueAddress": {"city": "Boston"}}]),
     changed(OBS, extension=[{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
                              "valueAddress": {"city": "Boston"}}]),
     "Observation.extension[0]"),
    ("complex extension sub-extension urls", changed(PAT, extension=[
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
         "extension": [{"url": "code", "valueCodeableConcept": {"text": "US"}}]}]),
     changed(PAT, extension=[
         {"url": "http://hl7.org/fhir/StructureDefinition/patient-nationality",
          "extension": [{"url": "country", "valueCodeableConcept": {"text": "US"}}]}]),
     "Patient.extension[0].extension[0]"),
    ("txt-2 narrative has content", changed(PAT, text=narrative(f'<div xmlns="{XHTML}">Ana</div>')),
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}">  </div>')), "Patient.text.div"),
    ("txt-1 no event attributes",
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><p>Ana</p></div>')),
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><p onClick="x()">Ana</p></div>')),
     "Patient.text.div"),
    ("txt-1 no scripts or objects",
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><b>Ana</b></div>')),
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><object>Ana</object></div>')),
     "Patient.text.div"),
    ("txt-1 link schemes",
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><a href="https://x.org">A</a></div>')),
     changed(PAT, text=narrative(f'<div xmlns="{XHTML}"><a href="javascript:x()">A</a></div>')),
     "Patient.text.div"),
    ("ref-1 contained reference exists",
     changed(OBS, contained=[{"resourceType": "Patient", "id": "p"}],
             subject={"reference": "#p"}),
     changed(OBS, contained=[{"resourceType": "Patient", "id": "p"}],
             subject={"reference": "#q"}),
     "Observation.subject"),
    ("dom-3 contained resource is referenced",
     changed(OBS, contained=[{"resourceType": "Patient", "id": "p"}],
             subject={"reference": "#p"}),
     changed(OBS, contained=[{"resourceType": "Patient", "id": "p"}]),
     "Observation.contained[0]"),
    ("reference target type", changed(OBS, subject={"reference": "Patient/p1"}),
     changed(OBS, subject={"reference": "Medication/m1"}), "Observation.subject"),
    ("org-3 no home telecom on an organization",
     {"resourceType": "Organization", "name": "A", "telecom": [{"system": "phone",
                                                               "value": "1", "use": "work"}]},
     {"resourceType": "Organization", "name": "A", "telecom": [{"system": "phone",
                                                               "value": "1", "use": "home"}]},
     "Organization.telecom[0]"),
    ("required code binding", changed(PAT, gender="female"), changed(PAT, gender="woman"),
     "Patient.gender"),
]


@pytest.mark.parametrize(("label", "valid", "invalid", "expression"), CASES,
                         ids=[c[0] for c in CASES])
def test_rule_breaks_and_keeps(label, valid, invalid, expression):
    assert errors(valid) == []
    found = errors(invalid)
    assert any(expression in expr for _code, expr, _msg in found), found


def test_unknown_extension_is_a_warning_or_an_error_when_strict():
    resource = changed(PAT, extension=[{"url": "http://example.org/x", "valueString": "y"}])
    issues = validate_base(resource)
    assert [(i.severity, i.code) for i in issues] == [("warning", "not-supported")]
    assert errors(resource, strict_extensions=True)[0][:2] == ("not-supported",
                                                               ["Patient.extension[0]"])


def _bundle(kind: str, *entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out = {"resourceType": "Bundle", "type": kind, **extra}
    if entries:
        out["entry"] = list(entries)
    return out


def test_bundle_full_url_rules():
    good = _bundle("collection", {"fullUrl": "http://x.org/fhir/Patient/p1",
                                  "resource": {**PAT, "id": "p1"}})
    assert errors(good) == []
    wrong_id = _bundle("collection", {"fullUrl": "http://x.org/fhir/Patient/p2",
                                      "resource": {**PAT, "id": "p1"}})
    assert errors(wrong_id)[0][1] == ["Bundle.entry[0].fullUrl"]
    relative = _bundle("collection", {"fullUrl": "Patient/p1", "resource": {**PAT, "id": "p1"}})
    assert errors(relative)[0][1] == ["Bundle.entry[0].fullUrl"]
    duplicate = _bundle("collection", *[{"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-"
                                                    "cd9187a4c6e0", "resource": PAT}] * 2)
    assert any("bdl-7" in msg for _c, _e, msg in errors(duplicate))
    bad_uuid = _bundle("collection", {"fullUrl": "urn:uuid:not-a-uuid", "resource": PAT})
    assert errors(bad_uuid)[0][1] == ["Bundle.entry[0].fullUrl"]


def test_document_references_must_resolve():
    composition = {"resourceType": "Composition", "id": "c", "status": "final",
                   "type": {"text": "note"}, "date": "2024-01-01", "title": "Note",
                   "author": [{"reference": "Practitioner/dr"}],
                   "subject": {"reference": "Patient/p1"}}
    entries = [{"fullUrl": "http://x.org/fhir/Composition/c", "resource": composition},
               {"fullUrl": "http://x.org/fhir/Patient/p1", "resource": {**PAT, "id": "p1"}},
               {"fullUrl": "http://x.org/fhir/Practitioner/dr",
                "resource": {"resourceType": "Practitioner", "id": "dr"}}]
    doc = _bundle("document", *entries, identifier={"system": "urn:ietf:rfc:3986",
                                                    "value": "urn:uuid:0c3151bd-1cbf-4d64-b04d"
                                                             "-cd9187a4c6e0"},
                  timestamp="2024-01-01T00:00:00Z")
    assert errors(doc) == []
    broken = copy.deepcopy(doc)
    broken["entry"].pop(2)
    found = errors(broken)
    assert [e for _c, e, _m in found] == [["Bundle.entry[0].resource.author[0]"]], found


def test_reference_to_an_entry_of_another_type():
    bundle = _bundle("collection",
                     {"fullUrl": "http://x.org/fhir/Observation/o1",
                      "resource": {**OBS, "id": "o1", "subject": {"reference": "Patient/p1"}}},
                     {"fullUrl": "http://x.org/fhir/Patient/p1",
                      "resource": {"resourceType": "Group", "id": "p1", "type": "person",
                                   "actual": True}})
    assert any(e == ["Bundle.entry[0].resource.subject"] for _c, e, _m in errors(bundle))


def test_link_relations_are_iana():
    assert errors(_bundle("searchset", link=[{"relation": "next", "url": "http://x"}])) == []
    found = errors(_bundle("searchset", link=[{"relation": "nextpage", "url": "http://x"}]))
    assert found[0][1] == ["Bundle.link[0].relation"]


def test_nested_resources_are_validated():
    bad = changed(OBS)
    bad["status"] = "done"
    bundle = _bundle("collection", {"fullUrl": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
                                    "resource": bad})
    assert errors(bundle)[0][1] == ["Bundle.entry[0].resource.status"]
    params = {"resourceType": "Parameters", "parameter": [{"name": "r", "resource": bad}]}
    assert errors(params)[0][1] == ["Parameters.parameter[0].resource.status"]
