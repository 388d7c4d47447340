"""FHIR_SERVER_REFERENTIAL_INTEGRITY_ON_DELETE over HTTP on both databases: deleting a resource
that live resources still reference is refused (409, naming them) for the referral resource
types by default, for every type with `all`, never with `off`; records (AuditEvent,
Provenance) do not hold a resource alive."""

from __future__ import annotations

import pytest

from fhir_server.config import Settings
from tests.live import FhirHttp, LiveServer
from tests.samples import sample
from tests.snapshot import db_snapshot

pytestmark = pytest.mark.usefixtures("sample_world")


def _server(database, mode: str):  # type: ignore[no-untyped-def]
    from fhir_server.app import create_app

    settings = Settings.from_env(database_url=database.url.render_as_string(hide_password=False),
                                 base_url="", auth_mode="off",
                                 referential_integrity_on_delete=mode)
    live = LiveServer(create_app(settings, db=database))
    client = FhirHttp(live.base)
    client.database = database
    return live, client


@pytest.fixture(scope="module")
def servers(database):
    made = {mode: _server(database, mode) for mode in ("referral", "all", "off")}
    yield {mode: client for mode, (_live, client) in made.items()}
    for live, _client in made.values():
        live.stop()


def _task_for(client: FhirHttp, patient_id: str) -> dict:
    task = sample("Task")
    task["for"] = {"reference": f"Patient/{patient_id}"}
    resp = client.post("Task", task)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_referenced_patient_cannot_be_deleted_by_default(servers):
    client = servers["referral"]
    patient = client.post("Patient", sample("Patient")).json()
    task = _task_for(client, patient["id"])
    before = db_snapshot(client.database)
    resp = client.delete(f"Patient/{patient['id']}")
    assert resp.status_code == 409, resp.text
    outcome = resp.json()
    assert outcome["issue"][0]["code"] == "conflict"
    assert f"Task/{task['id']}" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["Patient"]
    assert db_snapshot(client.database) == before
    assert client.delete(f"Task/{task['id']}").status_code == 200
    assert client.delete(f"Patient/{patient['id']}").status_code == 200


def test_a_transaction_may_delete_the_referrer_first(servers):
    client = servers["referral"]
    patient = client.post("Patient", sample("Patient")).json()
    task = _task_for(client, patient["id"])
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "DELETE", "url": f"Task/{task['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{patient['id']}"}}]}
    assert client.post("", bundle).status_code == 200
    assert client.get(f"Patient/{patient['id']}").status_code == 410
    reverse = client.post("Patient", sample("Patient")).json()
    task = _task_for(client, reverse["id"])
    bundle["entry"] = [{"request": {"method": "DELETE", "url": f"Patient/{reverse['id']}"}},
                       {"request": {"method": "DELETE", "url": f"Task/{task['id']}"}}]
    refused = client.post("", bundle)
    assert refused.status_code == 409
    assert refused.json()["issue"][0]["expression"][0].startswith("Bundle.entry[0]")


def test_records_do_not_hold_a_resource(servers):
    client = servers["referral"]
    patient = client.post("Patient", sample("Patient")).json()
    provenance = {"resourceType": "Provenance", "recorded": "2024-01-01T00:00:00Z",
                  "target": [{"reference": f"Patient/{patient['id']}"}],
                  "agent": [{"who": {"display": "clerk"}}]}
    assert client.post("Provenance", provenance).status_code == 201
    assert client.delete(f"Patient/{patient['id']}").status_code == 200


def test_other_types_by_setting(servers):
    for mode, expected in (("referral", 200), ("all", 409), ("off", 200)):
        client = servers[mode]
        target = client.post("Basic", sample("Basic")).json()
        referrer = sample("Basic", subject={"reference": f"Basic/{target['id']}"})
        assert client.post("Basic", referrer).status_code == 201
        assert client.delete(f"Basic/{target['id']}").status_code == expected, mode


def test_off_allows_deleting_a_referenced_patient(servers):
    client = servers["off"]
    patient = client.post("Patient", sample("Patient")).json()
    _task_for(client, patient["id"])
    assert client.delete(f"Patient/{patient['id']}").status_code == 200


def test_unknown_setting_stops_startup(database):
    with pytest.raises(SystemExit, match="REFERENTIAL_INTEGRITY_ON_DELETE"):
        _server(database, "sometimes")


def test_referrers_the_caller_may_not_read_are_counted_not_named(database):
    """The 409 names only referrers the deleting caller may read (ids of the others are not
    theirs to learn): the referral's author sees its Task named, a foreign organization only
    a count."""
    from fhir_server.auth.context import AccessContext
    from fhir_server.auth.scopes import parse_scopes
    from fhir_server.features.integrity import RECORD_TYPES, _named
    from fhir_server.interactions.context import Call
    from fhir_server.storage.repository import Repository
    from tests.security_support import directory, referral, start

    secure = start(database)
    try:
        directory(secure, ["A", "B", "E"])
        secure.register("ehr-a", "A")
        made = referral(secure.client("ehr-a"), "A", "B", patient_name="Nobody", consent=False)
        res_type, res_id = made["sr"].split("/")
        scopes = parse_scopes("system/*.cruds")

        def as_org(org: str) -> str:
            call = Call(services=secure.services, base_url=secure.base,
                        access=AccessContext(client_id=f"c-{org}",
                                             organization=f"Organization/{org}", scopes=scopes))
            with database.read() as conn:
                return _named(conn, call, Repository(conn).referrers(
                    res_type, res_id, ignore_types=RECORD_TYPES))

        assert as_org("A") == f"{made['task']} (focus)"
        assert as_org("E") == "1 resource you may not read"
    finally:
        secure.live.stop()
