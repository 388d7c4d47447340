"""Write phases (fhir_server/interactions/phases.py): every write path runs prepare, check
and after-write, in the registered order, with a typed WriteEvent; the listing shows it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.phases import WriteEvent, WritePhases
from fhir_server.wiring import build_services
from tests.conftest import REPO_ROOT
from tests.samples import sample

MARK = "http://example.org/phase-test"


@pytest.fixture(scope="module")
def recorded(server):
    """Hooks on Basic that record what they saw: prepare adds a code, check refuses a
    `refuse` code, after-write notes the stored version."""
    seen: list[tuple[str, str, str, str | None]] = []

    def prepare(event: WriteEvent) -> dict | None:
        seen.append(("prepare", event.interaction, event.res_id, None))
        if event.resource is None:
            return None
        return {**event.resource, "code": {"coding": [{"system": MARK, "code": "prepared"}]}}

    def check(event: WriteEvent) -> list[Issue]:
        code = (event.resource or {}).get("code", {}).get("coding", [{}])[0].get("code")
        seen.append(("check", event.interaction, event.res_id, code))
        if (event.resource or {}).get("id", "").startswith("refuse"):
            raise FhirError(422, "business-rule", "refused by the test check", "Basic.id")
        return [Issue("information", "informational", "checked")] if event.resource else []

    def after(event: WriteEvent) -> None:
        assert event.stored is not None
        seen.append(("after-write", event.interaction, event.res_id,
                     str(event.stored.version)))

    phases = server.app.extensions["fhir_services"].phases
    phases.add("prepare", "test.prepare", prepare, order=999, types={"Basic"})
    phases.add("check", "test.check", check, order=999, types={"Basic"})
    phases.add("after-write", "test.after", after, order=999, types={"Basic"})
    yield seen
    phases.hooks[:] = [h for h in phases.hooks if not h.name.startswith("test.")]


def _phases_of(seen, res_id):
    return [(phase, interaction) for phase, interaction, rid, _ in seen if rid == res_id]


def test_every_write_path_runs_the_phases_in_order(server, recorded):
    created = server.post("Basic", sample("Basic")).json()
    rid = created["id"]
    assert created["code"]["coding"][0]["code"] == "prepared"  # prepare's content is stored
    assert [s for s in recorded if s[2] == rid][1][3] == "prepared"  # check saw it
    patient = server.post("Patient", sample("Patient")).json()["id"]  # references must resolve
    body = {**created, "subject": {"reference": f"Patient/{patient}"}}
    assert server.put(f"Basic/{rid}", body).status_code == 200
    ops = [{"op": "add", "path": "/author", "value": {"reference": f"Patient/{patient}"}}]
    assert server.patch(f"Basic/{rid}", ops).status_code == 200
    assert server.delete(f"Basic/{rid}").status_code == 200
    assert _phases_of(recorded, rid) == [
        ("prepare", "create"), ("check", "create"), ("after-write", "create"),
        ("prepare", "update"), ("check", "update"), ("after-write", "update"),
        ("prepare", "update"), ("check", "update"), ("after-write", "update"),
        ("prepare", "delete"), ("check", "delete"), ("after-write", "delete")]


def test_bundle_entries_and_conditional_writes_run_the_phases(server, recorded):
    ident = {"system": MARK, "value": "cond-1"}
    resp = server.post("Basic", {**sample("Basic"), "identifier": [ident]},
                       headers={"If-None-Exist": f"identifier={MARK}|cond-1"})
    rid = resp.json()["id"]
    patient = server.post("Patient", sample("Patient")).json()["id"]
    ops = [{"op": "add", "path": "/subject", "value": {"reference": f"Patient/{patient}"}}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    tx = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": binary, "request": {"method": "PATCH",
                                         "url": f"Basic?identifier={MARK}|cond-1"}}]}
    assert server.post("", tx).status_code == 200
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "DELETE", "url": f"Basic?identifier={MARK}|cond-1"}}]}
    assert server.post("", batch).json()["entry"][0]["response"]["status"].startswith("200")
    assert [i for _p, i in _phases_of(recorded, rid)] == ["create"] * 3 + ["update"] * 3 + [
        "delete"] * 3


def test_a_check_refusal_writes_nothing(server, recorded):
    resp = server.put("Basic/refuse-1", {**sample("Basic"), "id": "refuse-1"})
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"] == ["Basic.id"]
    assert server.get("Basic/refuse-1").status_code == 404
    assert ("after-write", "create", "refuse-1") not in [s[:3] for s in recorded]


def test_the_order_is_explicit_and_listed(tmp_path):
    services = build_services(Settings(database_url=f"sqlite:///{tmp_path / 'o.db'}",
                                       auth_mode="off",
                                       platform_organization="Organization/platform"))
    names = [(h.phase, h.name) for h in services.phases.hooks]
    assert names == [
        ("prepare", "workflow.referral-rules"),
        ("prepare", "screening.referral-priority-floor"),
        ("prepare", "subscriptions.registry"),
        ("check", "integrity.referenced-on-delete"),
        ("check", "profiles.validate"),
        ("check", "screening.score"),
        ("check", "access.references-readable"),  # last: after every transform
        ("after-write", "auth.audit-and-provenance"),
        ("after-write", "workflow.follow-up-tasks"),
        ("after-write", "coordination.platform-sync"),
        ("after-write", "screening.derived-resources"),
        ("after-write", "outcomes.referral-facts"),
        ("after-write", "subscriptions.outbox"),
        ("after-write", "directory.match-caches"),
        ("after-write", "reminders.queue"),
    ]
    services.db.dispose()


def test_registration_mistakes_are_refused():
    phases = WritePhases()
    phases.add("check", "one", lambda e: None, order=1)
    with pytest.raises(ValueError, match="already registered"):
        phases.add("check", "one", lambda e: None, order=2)
    with pytest.raises(ValueError, match="unknown write phase"):
        phases.add("before", "two", lambda e: None, order=1)


def test_hooks_command_prints_the_order(tmp_path):
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'h.sqlite3'}", "PATH": "/usr/bin:/bin",
           "FHIR_SERVER_ENV_FILE": "/dev/null"}
    done = subprocess.run([sys.executable, "-m", "fhir_server", "hooks"], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["phase", "order", "hook", "resource", "types"]
    assert lines[1].split()[:3] == ["prepare", "100", "workflow.referral-rules"]
    assert any(line.split()[:3] == ["check", "100", "profiles.validate"] for line in lines)
    checks = [line.split()[2] for line in lines if line.startswith("check ")]
    assert checks[-1] == "access.references-readable"
