"""A property test of the whole access policy.

A generated network (50 organizations by default: clinics and partners) screens and refers
patients through the API with real tokens. A malicious partner then performs a generated
sequence of writes and calls: crafted references in every slot of many resource types,
self-made Tasks and ServiceRequests, updates and patches of others' resources, consent
flips, transactions, deletes, operations, launches and patient-picker searches. Between
its steps the network goes on legitimately (referrals accepted, consent withdrawn).

After each step, what the partner can read must stay within what the documented rules
(`tests/access_model.py`, an independent statement of them) give it from the data as it
now is; every few steps and at the end a full sweep compares everything it can search.

Sizes: FHIR_PROPERTY_ORGS (50), FHIR_PROPERTY_STEPS (1000), FHIR_PROPERTY_SEED (fixed);
a nightly run sets larger values. The seed is printed so a failure reproduces.
"""

from __future__ import annotations

import os
import random
import time
import uuid
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from fhir_server.storage.schema import resources
from tests.access_model import visible
from tests.samples import sample
from tests.security_support import APP, create, directory, ref, referral, start

ORGS = int(os.environ.get("FHIR_PROPERTY_ORGS", "50"))
STEPS = int(os.environ.get("FHIR_PROPERTY_STEPS", "1000"))
SEED = int(os.environ.get("FHIR_PROPERTY_SEED", "20261206"))
CLINICS = max(2, ORGS // 5)
ATTACKER = "P0"
SWEEP_EVERY = 100
SWEEP_TYPES = ("Patient", "Task", "ServiceRequest", "QuestionnaireResponse", "Observation",
               "Condition", "Consent", "Procedure", "Flag", "DocumentReference", "Goal",
               "Encounter", "Subscription", "Communication", "Provenance", "CareTeam")

#: Reference slots an attacker fills, per resource type it writes.
SLOTS: dict[str, list[str]] = {
    "Observation": ["subject", "focus[]", "derivedFrom[]", "hasMember[]", "basedOn[]"],
    "Condition": ["subject", "evidence.detail[]"],
    "ServiceRequest": ["subject", "supportingInfo[]", "reasonReference[]", "performer[]",
                       "requester", "basedOn[]", "replaces[]"],
    "Task": ["focus", "for", "owner", "requester", "basedOn[]", "partOf[]"],
    "Consent": ["patient", "sourceReference"],
    "Procedure": ["subject", "basedOn[]", "reasonReference[]", "partOf[]"],
    "DocumentReference": ["subject", "context.related[]"],
    "Goal": ["subject", "addresses[]"],
    "Communication": ["subject", "about[]", "basedOn[]", "partOf[]"],
    "CareTeam": ["subject", "participant.member[]"],
    "Flag": ["subject"],
    "Encounter": ["subject", "basedOn[]"],
}


def _put_slot(resource: dict, slot: str, target: str) -> None:
    """Set a reference at a slot path such as `subject`, `focus[]` or `evidence.detail[]`."""
    *parents, leaf = slot.split(".")
    node = resource
    for part in parents:
        key = part.rstrip("[]")
        if part.endswith("[]"):
            node.setdefault(key, [{}])
            node = node[key][0]
        else:
            node = node.setdefault(key, {})
    key = leaf.rstrip("[]")
    node[key] = [ref(target)] if leaf.endswith("[]") else ref(target)


def _template(res_type: str) -> dict:
    if res_type == "Flag":
        return {"resourceType": "Flag", "status": "active", "code": {"text": "x"},
                "subject": ref("Patient/p1")}
    return sample(res_type)


class World:
    """The network, the attacker's sessions, and the oracle's view of the database."""

    def __init__(self, server: Any, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.rows: dict[tuple[str, str], tuple[dict, str | None]] = {}
        self.since = -1
        self._expected: tuple[int, set[str]] | None = None
        self.signed_in = 0.0
        self.renew()
        self.step_log: list[str] = []

    def renew(self) -> None:
        """A fresh token and sign-in, as a real client gets before its token expires
        (access tokens live five minutes; a long run outlives them)."""
        self.attacker = self.server.client("p-0")
        self.browser = self.server.browser("dr_p0")
        self.signed_in = time.monotonic()

    # -- the oracle's input: the database as it is -----------------------------------
    def refresh(self) -> list[tuple[dict, str | None]]:
        """Read what changed since the last refresh (AuditEvents are nobody's but the
        administrators': the oracle never grants them, so they are not loaded)."""
        r = resources
        with self.server.database.read() as conn:
            for row in conn.execute(select(r.c.res_type, r.c.res_id, r.c.deleted, r.c.body,
                                           r.c.author_org, r.c.last_updated)
                                    .where(r.c.last_updated > self.since,
                                           r.c.res_type != "AuditEvent")):
                self.since = max(self.since, row.last_updated)
                key = (row.res_type, row.res_id)
                if row.deleted:
                    self.rows.pop(key, None)
                else:
                    self.rows[key] = (orjson.loads(row.body), row.author_org)
        return list(self.rows.values())

    def expected(self) -> set[str]:
        """What the rules let the attacker read now (recomputed only after a change)."""
        world = self.refresh()
        if self._expected is None or self._expected[0] != self.since:
            self._expected = (self.since, visible(f"Organization/{ATTACKER}", world))
        return self._expected[1]

    def any_ref(self, res_type: str | None = None) -> str:
        keys = [k for k in self.rows if res_type is None or k[0] == res_type]
        if not keys:
            keys = list(self.rows)
        res_type_, res_id = self.rng.choice(keys)
        return f"{res_type_}/{res_id}"

    # -- the attacker's steps -----------------------------------------------------------
    def step(self) -> list[str]:
        """One generated attack; returns the references it touched (to check after)."""
        if time.monotonic() - self.signed_in > 120:
            self.renew()
        kind = self.rng.choices(
            ["create", "update", "patch", "transaction", "delete", "operation", "launch",
             "picker"], weights=[30, 15, 10, 10, 5, 15, 8, 7])[0]
        return getattr(self, f"_{kind}")()

    def _crafted(self) -> tuple[dict, list[str]]:
        res_type = self.rng.choice(list(SLOTS))
        resource = _template(res_type)
        touched = []
        for slot in self.rng.sample(SLOTS[res_type], k=self.rng.randint(1, len(SLOTS[res_type]))):
            target = self.any_ref()
            _put_slot(resource, slot, target)
            touched.append(target)
        if res_type == "Task" and self.rng.random() < 0.5:
            resource["code"]["coding"][0]["code"] = "fulfill"
        return resource, touched

    def _create(self) -> list[str]:
        resource, touched = self._crafted()
        resp = self.attacker.post(resource["resourceType"], resource)
        assert resp.status_code < 500, resp.text
        self.step_log.append(f"create {resource['resourceType']} -> {resp.status_code}")
        return touched

    def _update(self) -> list[str]:
        target = self.any_ref()
        got = self.attacker.get(target)
        body = got.json() if got.status_code == 200 else {
            "resourceType": target.split("/")[0], "id": target.split("/")[1]}
        res_type = body["resourceType"]
        touched = [target]
        if res_type == "Consent":
            body["status"] = "active"
        elif res_type == "Task":
            body["owner"] = ref(f"Organization/{ATTACKER}")
        elif res_type in SLOTS:
            slot = self.rng.choice(SLOTS[res_type])
            other = self.any_ref()
            _put_slot(body, slot, other)
            touched.append(other)
        resp = self.attacker.put(target, body)
        assert resp.status_code < 500, resp.text
        self.step_log.append(f"update {target} -> {resp.status_code}")
        return touched

    def _patch(self) -> list[str]:
        target, other = self.any_ref(), self.any_ref("Patient")
        resp = self.attacker.patch(target, [{"op": "add", "path": "/subject",
                                             "value": ref(other)}])
        assert resp.status_code < 500, resp.text
        self.step_log.append(f"patch {target} -> {resp.status_code}")
        return [target, other]

    def _transaction(self) -> list[str]:
        entries, touched = [], []
        for _ in range(self.rng.randint(2, 4)):
            resource, refs = self._crafted()
            touched += refs
            entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": resource,
                            "request": {"method": "POST", "url": resource["resourceType"]}})
        if len(entries) > 1:  # a cross-reference inside the Bundle
            entries[1]["resource"].setdefault("extension", []).append(
                {"url": "http://example.org/x", "valueReference": {
                    "reference": entries[0]["fullUrl"]}})
        resp = self.attacker.post("", {"resourceType": "Bundle", "type": "transaction",
                                       "entry": entries})
        assert resp.status_code < 500, resp.text
        self.step_log.append(f"transaction -> {resp.status_code}")
        return touched

    def _delete(self) -> list[str]:
        target = self.any_ref()
        resp = self.attacker.delete(target)
        assert resp.status_code < 500, resp.text
        self.step_log.append(f"delete {target} -> {resp.status_code}")
        return [target]

    def _operation(self) -> list[str]:
        choices = [
            (lambda: self.any_ref("Patient"), "{}/$recommend-care", "GET"),
            (lambda: self.any_ref("Task"), "{}/$timeline", "GET"),
            (lambda: self.any_ref("ServiceRequest"), "{}/$match", "POST"),
            (lambda: self.any_ref("QuestionnaireResponse"), "{}/$extract", "POST"),
            (lambda: "", "$referral-metrics", "GET"),
            (lambda: self.any_ref("Subscription"), "{}/$status", "GET"),
        ]
        pick, path, method = self.rng.choice(choices)
        target = pick()
        url = path.format(target)
        resp = (self.attacker.post(url, {"resourceType": "Parameters"}) if method == "POST"
                else self.attacker.get(url))
        assert resp.status_code < 500, (url, resp.text)
        self.step_log.append(f"{method} {url} -> {resp.status_code}")
        self.check_text(resp.text, named={target})
        return [target] if target else []

    def _launch(self) -> list[str]:
        patient = self.any_ref("Patient")
        resp = self.browser.get(f"{self.server.root}/auth/launch", params={
            "client_id": APP, "patient": patient.split("/")[1]}, allow_redirects=False,
            timeout=30)
        allowed = patient in self.expected()
        assert resp.status_code == (302 if allowed else 400), (patient, resp.status_code)
        self.step_log.append(f"launch {patient} -> {resp.status_code}")
        return [patient]

    def _picker(self) -> list[str]:
        query = self.rng.choice(["Rivera", "Ana", "Okafor", "a"])
        page = self.server.picker_page(self.browser, query)
        expected = self.expected()
        for (res_type, res_id) in self.rows:
            if res_type == "Patient" and f'value="{res_id}"' in page:
                assert f"Patient/{res_id}" in expected, (query, res_id)
        self.step_log.append(f"picker {query}")
        return []

    # -- checks ------------------------------------------------------------------------
    def check_text(self, text: str, named: set[str]) -> None:
        """No id of a resource the attacker may not read, unless the request named it."""
        expected = self.expected()
        for (res_type, res_id) in self.rows:
            key = f"{res_type}/{res_id}"
            if key in expected or key in named or len(res_id) < 8:
                continue
            assert res_id not in text, f"{key} leaked after {self.step_log[-1]}"

    def check_touched(self, touched: list[str]) -> None:
        """What the step pointed at and may not read must still answer 404."""
        expected = self.expected()
        for target in dict.fromkeys(t for t in touched if t and t not in expected):
            status = self.attacker.get(target).status_code
            assert status != 200, (
                f"{target} readable but not allowed; steps: {self.step_log[-5:]}")

    def sweep(self) -> set[str]:
        """Everything the attacker can search must be allowed; returns what it sees."""
        expected = self.expected()
        seen: set[str] = set()
        for res_type in SWEEP_TYPES:
            resp = self.attacker.get(res_type, params={"_count": 1000, "_elements": "id"})
            assert resp.status_code == 200, resp.text
            seen |= {f"{res_type}/{e['resource']['id']}" for e in resp.json().get("entry", [])}
        extra = seen - expected
        assert not extra, f"readable beyond the rules: {sorted(extra)[:10]}; " \
                          f"last steps: {self.step_log[-5:]}"
        return seen


def _network(server: Any, rng: random.Random) -> None:
    """Clinics screen and refer patients to random partners, some with consent."""
    orgs = [f"C{i}" for i in range(CLINICS)] + [f"P{i}" for i in range(ORGS - CLINICS)]
    directory(server, orgs)
    for org in orgs:
        server.register(org.lower().replace("p", "p-").replace("c", "c-"), org)
    server.add_user("dr_p0", ATTACKER)
    partners = [o for o in orgs if o.startswith("P")]
    for clinic in orgs[:CLINICS]:
        http = server.client(clinic.lower().replace("c", "c-"))
        for n in range(2):
            owner = ATTACKER if (clinic == "C0" and n == 0) else rng.choice(partners)
            referral(http, clinic, owner, patient_name=rng.choice(["Rivera", "Okafor", "Li"]),
                     consent=rng.random() < 0.5)
        sub = sample("Subscription")
        sub["_criteria"]["extension"][0]["valueString"] = f"Task?owner=Organization/{clinic}"
        create(http, sub)


def _legit_move(server: Any, world: World, rng: random.Random) -> None:
    """The network goes on: a clinic withdraws or restores a consent it wrote."""
    consents = [(k, a) for k, (r, a) in world.rows.items() if k[0] == "Consent"
                and a and a.split("/")[1].startswith("C")]
    if not consents:
        return
    (res_type, res_id), author = rng.choice(consents)
    http = server.client(author.split("/")[1].lower().replace("c", "c-"))
    body = http.get(f"Consent/{res_id}").json()
    body["status"] = "inactive" if body["status"] == "active" else "active"
    assert http.put(f"Consent/{res_id}", body).status_code == 200


@pytest.fixture(scope="module")
def network(database):
    rng = random.Random(SEED)
    server = start(database)
    _network(server, rng)
    yield server, rng
    server.live.stop()


def test_a_malicious_partner_never_reads_beyond_the_rules(network):
    server, rng = network
    print(f"property test: seed={SEED} orgs={ORGS} steps={STEPS}")
    world = World(server, rng)
    first = world.sweep()
    assert any(k.startswith("Patient/") for k in first), "the attacker has a referral"
    for n in range(STEPS):
        touched = world.step()
        world.check_touched(touched)
        if n % 25 == 24:
            _legit_move(server, world, rng)
        if n % SWEEP_EVERY == SWEEP_EVERY - 1:
            world.sweep()
    last = world.sweep()
    assert last, "the attacker still sees its own data"
