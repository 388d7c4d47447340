"""HSDS 3.0 import: round trip (JSON and CSV package), idempotent re-import, removed services
marked inactive, bad rows reported one by one with nothing imported."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import pytest

from fhir_server.auth.context import SYSTEM
from fhir_server.directory_cli import import_path, import_tables
from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call
from mappers import directory_model as dm
from mappers import hsds
from tests.snapshot import db_snapshot

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "directory" / "hsds-sample.json"


def _call(server) -> Call:
    return Call(services=server.app.extensions["fhir_services"], base_url=server.base,
                access=SYSTEM)


def _tables() -> dict:
    return json.loads(SAMPLE.read_text())


def _by_hsds(server, res_type: str, hsds_id: str) -> dict:
    bundle = server.get(f"{res_type}?identifier={dm.HSDS_ID_SYSTEM}|{hsds_id}").json()
    assert bundle["total"] == 1, bundle
    return bundle["entry"][0]["resource"]


def test_json_import_round_trips(server):
    summary = import_path(_call(server), SAMPLE)
    assert (summary.organizations, summary.locations, summary.services) == (4, 4, 12)
    tables = _tables()
    row = tables["service"][1]
    svc = _by_hsds(server, "HealthcareService", row["id"])
    assert svc["name"] == row["name"] and svc["active"] is True
    org = _by_hsds(server, "Organization", row["organization_id"])
    assert svc["providedBy"]["reference"] == f"Organization/{org['id']}"
    loc = _by_hsds(server, "Location", "hsds-loc-0")
    assert svc["location"] == [{"reference": f"Location/{loc['id']}"}]
    src = tables["location"][0]
    assert loc["position"] == {"latitude": src["latitude"], "longitude": src["longitude"]}
    facts = dm.service_facts(svc)
    langs = {r["code"] for r in tables["language"] if r["service_id"] == row["id"]}
    assert facts.languages == langs
    assert facts.age_min == 18 and "in-person" in facts.modalities
    cap = next(c for c in tables["service_capacity"] if c["service_id"] == row["id"])
    assert facts.capacity == ("capacity" if cap["available"] else "no-capacity")
    assert str(facts.confirmed) == cap["updated"]
    assert svc["availableTime"] == [{"daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                                     "availableStartTime": "09:00:00",
                                     "availableEndTime": "17:00:00"}]


def test_reimport_is_idempotent_and_removed_services_become_inactive(server):
    call = _call(server)
    import_path(call, SAMPLE)
    before = db_snapshot(server.database)
    import_path(call, SAMPLE)
    after = db_snapshot(server.database)
    assert after["resources"] == before["resources"]  # no new versions, same bodies
    tables = _tables()
    gone = tables["service"].pop(0)
    tables["service_at_location"] = [r for r in tables["service_at_location"]
                                     if r["service_id"] != gone["id"]]
    for key in ("language", "phone", "schedule", "service_capacity"):
        tables[key] = [r for r in tables[key] if r["service_id"] != gone["id"]]
    tables["attribute"] = [r for r in tables["attribute"] if r["link_id"] != gone["id"]]
    summary = import_tables(call, tables)
    assert summary.deactivated == [gone["id"]]
    assert _by_hsds(server, "HealthcareService", gone["id"])["active"] is False
    assert _by_hsds(server, "HealthcareService", tables["service"][0]["id"])["active"] is True


def test_csv_package_round_trips(server, tmp_path):
    tables = _tables()
    for name, rows in tables.items():
        fields = sorted({k for r in rows for k in r})
        with (tmp_path / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)
    from_csv = hsds.map_dataset(hsds.read_csv_package(tmp_path))
    from_json = hsds.map_dataset(tables)
    assert from_csv.errors == [] and from_csv.entries == from_json.entries
    assert import_path(_call(server), tmp_path).services == 12


def _broken(mutate) -> dict:
    tables = copy.deepcopy(_tables())
    mutate(tables)
    return tables


@pytest.mark.parametrize("mutate, expected", [
    (lambda t: t["service"][2].pop("name"), ("service[2].name", "required field 'name'")),
    (lambda t: t["organization"][1].update(name=None),
     ("organization[1].name", "required field 'name'")),
    (lambda t: t["taxonomy_term"].append({"id": "tt-x", "code": "astrology", "name": "?"}),
     ("taxonomy_term[16].code", "unknown taxonomy code 'astrology'")),
    (lambda t: t["location"][0].update(latitude=123.4),
     ("location[0].latitude", "invalid coordinates (123.4")),
    (lambda t: t["location"][1].update(longitude="east"),
     ("location[1].latitude", "invalid coordinates")),
    (lambda t: t["service"].append(dict(t["service"][0])),
     ("service[12].id", "duplicate id 'hsds-svc-0-0'")),
    (lambda t: t["service"][3].update(organization_id="ghost"),
     ("service[3].organization_id", "unknown organization 'ghost'")),
    (lambda t: t["service"][0].update(status="sometimes"),
     ("service[0].status", "unknown service status")),
    (lambda t: t.update(service="not rows"), ("service[0].*", "must be an array")),
])
def test_bad_rows_are_reported_and_nothing_is_imported(server, mutate, expected):
    before = db_snapshot(server.database)
    with pytest.raises(FhirError) as caught:
        import_tables(_call(server), _broken(mutate))
    found = [(i.expression[0], i.diagnostics) for i in caught.value.issues]
    assert any(where == expected[0] and expected[1] in text for where, text in found), found
    assert caught.value.status == 422
    assert db_snapshot(server.database) == before


def test_every_bad_row_is_reported_at_once():
    def many(t: dict) -> None:
        t["service"][0].pop("name")
        t["location"][2].update(latitude=-91)
        t["taxonomy_term"][0]["code"] = "nonsense"

    errors = hsds.map_dataset(_broken(many)).errors
    assert {e.expression for e in errors} >= {"service[0].name", "location[2].latitude",
                                              "taxonomy_term[0].code"}
