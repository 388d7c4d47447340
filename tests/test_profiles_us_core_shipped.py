"""US Core 7.0.0 CareTeam and DocumentReference, shipped as published JSON: the validator
checks a resource that claims them (library and on write over HTTP), and the
CapabilityStatement declares them in supportedProfile only because the validator knows them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from profiles.loader import registry
from profiles.validator import validate

UC = "http://hl7.org/fhir/us/core/StructureDefinition/"
CARETEAM = UC + "us-core-careteam"
DOCREF = UC + "us-core-documentreference"
DOC_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category"


def careteam() -> dict[str, Any]:
    """A CareTeam conformant to US Core 7.0.0 (members on the sample world's server)."""
    return {"resourceType": "CareTeam", "meta": {"profile": [CARETEAM + "|7.0.0"]},
            "status": "active", "name": "Behavioral health team",
            "subject": {"reference": "Patient/p1"},
            "participant": [{"role": [{"coding": [{"system": "http://snomed.info/sct",
                                                   "code": "224535009",
                                                   "display": "Registered nurse"}]}],
                             "member": {"reference": "Organization/o1"}}]}


def docref() -> dict[str, Any]:
    """A DocumentReference conformant to US Core 7.0.0."""
    return {"resourceType": "DocumentReference", "meta": {"profile": [DOCREF]},
            "status": "current",
            "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4",
                                 "display": "Consult note"}]},
            "category": [{"coding": [{"system": DOC_CATEGORY, "code": "clinical-note"}]}],
            "subject": {"reference": "Patient/p1"}, "date": "2026-11-02T10:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": "bm90ZQ=="}}]}


def _set(resource: dict, path: str, value: Any) -> dict:
    """A copy of `resource` with the dotted `path` set (None deletes it)."""
    out = copy.deepcopy(resource)
    *parents, last = path.split(".")
    node: Any = out
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is None:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return out


# (resource factory, change, expected expression, expected issue code): one rule each.
BROKEN = {
    "careteam-status-not-in-vs": (careteam, "status", "bogus", "CareTeam.status",
                                  "code-invalid"),
    "careteam-no-subject": (careteam, "subject", None, "CareTeam.subject", "required"),
    "careteam-subject-type": (careteam, "subject", {"reference": "Practitioner/x"},
                              "CareTeam.subject", "structure"),
    "careteam-no-participant": (careteam, "participant", None, "CareTeam.participant",
                                "required"),
    "careteam-no-role": (careteam, "participant.0.role", None,
                         "CareTeam.participant[0].role", "required"),
    "careteam-two-roles": (careteam, "participant.0.role",
                           [{"text": "nurse"}, {"text": "coordinator"}],
                           "CareTeam.participant[0].role[1]", "structure"),
    "careteam-no-member": (careteam, "participant.0.member", None,
                           "CareTeam.participant[0].member", "required"),
    "careteam-member-type": (careteam, "participant.0.member", {"reference": "Device/d1"},
                             "CareTeam.participant[0].member", "structure"),
    "docref-no-type": (docref, "type", None, "DocumentReference.type", "required"),
    "docref-type-not-a-document-code": (
        docref, "type", {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                               "v3-NullFlavor", "code": "NI"}]},
        "DocumentReference.type", "code-invalid"),
    "docref-no-category": (docref, "category", None, "DocumentReference.category",
                           "required"),
    "docref-no-subject": (docref, "subject", None, "DocumentReference.subject", "required"),
    "docref-subject-type": (docref, "subject", {"reference": "Organization/o1"},
                            "DocumentReference.subject", "structure"),
    "docref-status": (docref, "status", "final", "DocumentReference.status", "code-invalid"),
    "docref-attachment-without-url-or-data": (
        docref, "content.0.attachment", {"contentType": "text/plain"},
        "DocumentReference.content[0].attachment", "invariant"),
}


def _errors(resource: dict) -> list:
    return [i for i in validate(resource) if i.severity in ("error", "fatal")]


def test_shipped_with_their_canonical_urls_and_version():
    for url, res_type in ((CARETEAM, "CareTeam"), (DOCREF, "DocumentReference")):
        sd = registry().get(url + "|7.0.0")
        assert sd is not None and sd["type"] == res_type and sd["version"] == "7.0.0"
        assert url in registry().resource_profiles()[res_type]


@pytest.mark.parametrize("make", [careteam, docref])
def test_conformant_resource_has_no_error(make):
    assert _errors(make()) == []


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_broken_rule_is_caught(case):
    make, path, value, expression, code = BROKEN[case]
    issues = _errors(_set(make(), path, value))
    assert any(expression in (i.expression or []) and i.code == code for i in issues), \
        [(i.code, i.expression, i.diagnostics) for i in issues]


def test_the_rules_apply_only_to_a_resource_that_claims_the_profile():
    unclaimed = _set(_set(careteam(), "meta", None), "participant", None)
    assert _errors(unclaimed) == []
    assert _errors(_set(careteam(), "participant", None))


def test_a_category_outside_the_us_core_slice_is_allowed():
    other = {"coding": [{"system": "http://example.org/doc-kinds", "code": "referral"}]}
    assert _errors(_set(docref(), "category", [other])) == []


@pytest.mark.usefixtures("sample_world")
def test_capability_statement_declares_them(server):
    cap = server.get("metadata").json()
    rest = {r["type"]: r for r in cap["rest"][0]["resource"]}
    assert CARETEAM in rest["CareTeam"]["supportedProfile"]
    assert DOCREF in rest["DocumentReference"]["supportedProfile"]


@pytest.mark.usefixtures("sample_world")
@pytest.mark.parametrize("make", [careteam, docref])
def test_conformant_resource_is_stored(server, make):
    created = server.post(make()["resourceType"], make())
    assert created.status_code == 201, created.text
    stored = server.get(f"{make()['resourceType']}/{created.json()['id']}").json()
    assert stored["meta"]["profile"] == make()["meta"]["profile"]


@pytest.mark.usefixtures("sample_world")
@pytest.mark.parametrize("case", ["careteam-no-role", "careteam-member-type",
                                  "docref-no-category", "docref-attachment-without-url-or-data"])
def test_broken_resource_is_refused_on_create_and_update(server, case):
    make, path, value, expression, code = BROKEN[case]
    res_type = make()["resourceType"]
    broken = _set(make(), path, value)
    # a Device member breaks base R4 already (CareTeam.participant.member's targets): 400
    status = 400 if case == "careteam-member-type" else 422
    refused = server.post(res_type, broken)
    assert refused.status_code == status, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["code"] == code and expression in i.get("expression", [])
               for i in outcome["issue"]), outcome
    rid = server.post(res_type, make()).json()["id"]
    update = server.put(f"{res_type}/{rid}", {**broken, "id": rid})
    assert update.status_code == status, update.text
    assert server.get(f"{res_type}/{rid}").json()["meta"]["versionId"] == "1"
