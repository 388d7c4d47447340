"""Every operation this server defines has a published OperationDefinition (valid R4, served at
/OperationDefinition/[id], referenced from the CapabilityStatement) that agrees with how it is
registered; operations that change nothing take GET with query parameters (typed by their
definition) and POST with Parameters."""

from __future__ import annotations

import pytest

from fhir_server.interactions.operation_definitions import by_url, definitions
from fhir_server.workflow.canonical import CANONICAL_BASE
from profiles.base_r4 import validate_base
from tests.samples import sample

pytestmark = pytest.mark.usefixtures("sample_world")

OURS = ("match", "update-capacity", "redirect", "assign-recipient", "recommend-care",
        "timeline", "referral-metrics", "audit-events")


def _registry(server):  # type: ignore[no-untyped-def]
    return server.app.extensions["fhir_services"].operations


def test_every_operation_we_define_is_published_and_agrees(server):
    registered = {op.name: op for op in _registry(server).operations.values()
                  if op.definition.startswith(CANONICAL_BASE)}
    # $assign-recipient exists only on a coordination-platform server (test_platform_http)
    assert set(OURS) - {"assign-recipient"} <= set(registered)
    assert {d["code"] for d in definitions()} == set(OURS)
    for name, op in registered.items():
        d = by_url(op.definition)
        assert d is not None, name
        assert d["code"] == name
        assert [i.to_fhir() for i in validate_base(d) if i.severity == "error"] == []
        assert d["system"] == op.system
        assert d["type"] == op.type_level and d["instance"] == op.instance_level
        assert set(d.get("resource", [])) == set(op.types), name
        assert d["affectsState"] == op.affects_state, name
        assert ("GET" in op.methods) == (not op.affects_state), name
        served = server.get(f"OperationDefinition/{d['id']}")
        assert served.status_code == 200 and served.json()["url"] == d["url"]


def test_capability_statement_references_the_definitions(server):
    rest = server.get("metadata").json()["rest"][0]
    refs = {o["name"]: o["definition"] for o in rest.get("operation", [])}
    for res in rest["resource"]:
        refs.update({o["name"]: o["definition"] for o in res.get("operation", [])})
    for name in OURS:
        if name == "assign-recipient" and name not in refs:
            continue  # only on a coordination-platform server
        assert by_url(refs[name]) is not None, name


@pytest.fixture(scope="module")
def referral(server):  # type: ignore[no-untyped-def]
    patient = server.post("Patient", sample("Patient")).json()
    sr = sample("ServiceRequest", subject={"reference": f"Patient/{patient['id']}"},
                code={"coding": [{"system": "http://snomed.info/sct",
                                  "code": "306226009"}]})  # referral for psychotherapy
    sr = server.post("ServiceRequest", sr).json()
    task = sample("Task", focus={"reference": f"ServiceRequest/{sr['id']}"})
    task["for"] = {"reference": f"Patient/{patient['id']}"}
    return patient, sr, server.post("Task", task).json()


def test_match_instance_form_by_get_with_query_parameters(server, referral):
    _patient, sr, _task = referral
    by_get = server.get(f"ServiceRequest/{sr['id']}/$match",
                        params={"count": "3", "safety-flag": "false", "near-misses": "2"})
    assert by_get.status_code == 200, by_get.text
    by_post = server.post(f"ServiceRequest/{sr['id']}/$match", {
        "resourceType": "Parameters", "parameter": [
            {"name": "count", "valueInteger": 3}, {"name": "safety-flag", "valueBoolean": False},
            {"name": "near-misses", "valueInteger": 2}]})
    assert by_post.status_code == 200
    assert by_get.json()["entry"] == by_post.json()["entry"]
    assert by_get.json()["type"] == "searchset"


@pytest.mark.parametrize(("query", "expression"), [
    ({"count": "three"}, "count"), ({"safety-flag": "yes"}, "safety-flag"),
    ({"colour": "blue"}, "colour")])
def test_match_get_rejects_bad_query_parameters(server, referral, query, expression):
    _patient, sr, _task = referral
    resp = server.get(f"ServiceRequest/{sr['id']}/$match", params=query)
    assert resp.status_code == 400
    assert resp.json()["issue"][0]["expression"] == [expression]


def test_read_only_operations_take_get_and_post(server, referral):
    patient, _sr, task = referral
    for path in (f"Patient/{patient['id']}/$recommend-care", f"Task/{task['id']}/$timeline",
                 "$referral-metrics"):
        by_get = server.get(path)
        by_post = server.post(path, {"resourceType": "Parameters"})
        assert by_get.status_code == 200, (path, by_get.text)
        assert by_post.status_code == 200, (path, by_post.text)
    metrics = server.post("$referral-metrics", {"resourceType": "Parameters", "parameter": [
        {"name": "start", "valueDateTime": "2020-01-01T00:00:00Z"}]})
    assert metrics.status_code == 200
    assert server.delete(f"Task/{task['id']}/$timeline").status_code == 405


def test_state_changing_operations_refuse_get(server, referral):
    _patient, _sr, task = referral
    resp = server.get(f"Task/{task['id']}/$redirect")
    assert resp.status_code == 405
    assert "POST" in resp.headers["Allow"]
