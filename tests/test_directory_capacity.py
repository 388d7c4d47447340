"""Capacity updates (only the providing organization), directory searches and the shipped
example directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fhir_server.auth.context import AccessContext
from fhir_server.auth.scopes import parse_scopes
from fhir_server.errors import FhirError
from fhir_server.features.directory import update_capacity
from fhir_server.interactions.context import Call
from mappers import directory_model as dm
from tests.snapshot import db_snapshot

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "directory" / \
    "directory-bundle.json"


def _generator():
    import importlib.util

    spec = importlib.util.spec_from_file_location("dir_generate", EXAMPLE.with_name("generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def loaded(server):
    bundle = _generator().generate(services=40)  # same generator, smaller: keeps tests fast
    response = server.post("", bundle)
    assert response.status_code == 200, response.text[:500]
    return server, bundle


def _capacity(status="waitlist", **extra) -> dict:
    params = [{"name": "capacity-status", "valueCode": status}]
    params += [{"name": k, **v} for k, v in extra.items()]
    return {"resourceType": "Parameters", "parameter": params}


def _first_service(bundle: dict) -> dict:
    return next(e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "HealthcareService")


def test_committed_example_is_the_generator_output():
    committed = json.loads(EXAMPLE.read_text())
    assert committed == _generator().generate()
    services = [e["resource"] for e in committed["entry"]
                if e["resource"]["resourceType"] == "HealthcareService"]
    assert len(services) >= 200
    cats = {c for s in services for c in dm.service_facts(s).categories}
    assert cats == set(dm.SERVICE_CATEGORIES)


def test_example_directory_loads_and_matches(loaded):
    server, bundle = loaded
    services = [e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "HealthcareService"]
    assert server.get("HealthcareService?_summary=count").json()["total"] == len(services)
    for kind in ("Endpoint", "PractitionerRole", "Location", "Organization"):
        assert server.get(f"{kind}?_summary=count").json()["total"] > 0
    match = server.post("HealthcareService/$match", {"resourceType": "Parameters", "parameter": [
        {"name": "service-category", "valueCode": "therapy"},
        {"name": "near", "valueString": "42.36|-71.06|30|km"}]}).json()
    scores = [e["search"]["score"] for e in match["entry"] if e["search"].get("mode") == "match"]
    assert scores and scores == sorted(scores, reverse=True)


def test_update_capacity_over_http_changes_capacity_wait_and_confirmed(loaded):
    server, bundle = loaded
    sid = _first_service(bundle)["id"]
    response = server.post(f"HealthcareService/{sid}/$update-capacity", _capacity(
        "waitlist", **{"capacity-notes": {"valueString": "12 waiting"},
                       "wait-days": {"valueInteger": 21},
                       "confirmed": {"valueDateTime": "2026-11-26T09:00:00Z"}}))
    assert response.status_code == 200, response.text
    facts = dm.service_facts(server.get(f"HealthcareService/{sid}").json())
    assert (facts.capacity, facts.capacity_notes, facts.wait_days, str(facts.confirmed)) == (
        "waitlist", "12 waiting", 21, "2026-11-26")


@pytest.mark.parametrize("body, where", [
    (_capacity("full"), "Parameters.parameter[0]"),
    (_capacity(**{"wait-days": {"valueInteger": -1}}), "Parameters.parameter[1]"),
    (_capacity(**{"confirmed": {"valueDateTime": "2026-11-26"}}), "Parameters.parameter[1]"),
    (_capacity(**{"mood": {"valueString": "x"}}), "Parameters.parameter[1].name"),
    ({"resourceType": "Parameters", "parameter": []}, "Parameters.parameter"),  # empty array
])
def test_bad_capacity_updates_are_400_and_change_nothing(loaded, body, where):
    server, bundle = loaded
    before = db_snapshot(server.database)
    response = server.post(f"HealthcareService/{_first_service(bundle)['id']}/$update-capacity",
                           body)
    assert response.status_code == 400
    assert response.json()["issue"][0]["expression"] == [where]
    assert db_snapshot(server.database) == before


def test_only_the_providing_organization_may_update_capacity(loaded):
    server, bundle = loaded
    svc = _first_service(bundle)
    owner = svc["providedBy"]["reference"]
    services = server.app.extensions["fhir_services"]

    def call_as(org: str | None) -> Call:
        scopes = parse_scopes("system/HealthcareService.rus")
        return Call(services=services, base_url=server.base,
                    access=AccessContext(client_id="c", organization=org, scopes=scopes))

    before = db_snapshot(server.database)
    for stranger in ("Organization/dir-org-999", None):
        with pytest.raises(FhirError) as caught:
            update_capacity(call_as(stranger), "HealthcareService", svc["id"], [],
                            _capacity("no-capacity"))
        assert caught.value.status == 403
        assert caught.value.issues[0].expression == ["HealthcareService.providedBy"]
    assert db_snapshot(server.database) == before
    result = update_capacity(call_as(owner), "HealthcareService", svc["id"], [],
                             _capacity("no-capacity"))
    assert result.status == 200
    assert dm.service_facts(result.stored.resource()).capacity == "no-capacity"
    assert server.post("HealthcareService/nope/$update-capacity",
                       _capacity()).status_code == 404


def test_directory_searches(loaded):
    server, bundle = loaded
    services = [e["resource"] for e in bundle["entry"]
                if e["resource"]["resourceType"] == "HealthcareService"]
    therapy = {s["id"] for s in services if "therapy" in dm.service_facts(s).categories}
    found = server.get(f"HealthcareService?service-category={dm.SERVICE_CATEGORY_CS}|therapy"
                       "&_count=1000&_elements=id").json()
    assert {e["resource"]["id"] for e in found["entry"]} == therapy
    tele = {s["id"] for s in services if "telehealth" in dm.service_facts(s).modalities}
    found = server.get(f"HealthcareService?characteristic={dm.MODALITY_CS}|telehealth"
                       "&_count=1000&_elements=id").json()
    assert {e["resource"]["id"] for e in found["entry"]} == tele
    from fhir_server.matching.ranking import haversine_km

    locations = {e["resource"]["id"]: e["resource"]["position"] for e in bundle["entry"]
                 if e["resource"]["resourceType"] == "Location"}
    first = next(iter(locations.values()))
    center = (first["latitude"], first["longitude"])
    near_q = f"{center[0]}|{center[1]}|15|km"
    close = {lid for lid, p in locations.items()
             if haversine_km(center, (p["latitude"], p["longitude"])) <= 15}
    near = server.get(f"Location?near={near_q}&_count=1000&_elements=id").json()
    assert close and {e["resource"]["id"] for e in near["entry"]} == close
    chained = server.get(f"HealthcareService?location.near={near_q}"
                         f"&service-category={dm.SERVICE_CATEGORY_CS}|therapy"
                         "&_count=1000&_elements=id").json()
    expected = {s["id"] for s in services if s["id"] in therapy and any(
        r["reference"].split("/")[1] in close for r in s["location"])}
    assert {e["resource"]["id"] for e in chained.get("entry", [])} == expected
