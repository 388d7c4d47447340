"""The referral workflow over HTTP, on every write path (issue 7).

Identity: tests run with auth off (every plain request is the privileged DEVELOPMENT context).
To act as a party, a request sends the test-only header `X-Test-Org: Organization/x`; the
`parties` fixture installs a Flask request class whose `fhir_access` property turns that header
into `AccessContext(organization=...)` (routes.make_call reads `request.fhir_access`).
"""

from __future__ import annotations

import copy
import uuid
from typing import Any

import pytest
from flask import Request

from fhir_server.auth.context import AccessContext
from fhir_server.auth.scopes import parse_scopes
from tests.outcomes_support import csv_rows, groups
from tests.samples import changed
from tests.snapshot import db_snapshot
from tests.workflow_expected import EXPECTED_NEXT, OWNER_MAY_SET, REQUESTER_MAY_SET, STATUSES

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
SDOHCC_CODES = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
TASK_PROFILE = SDOHCC + "SDOHCC-TaskForReferralManagement"
SR_PROFILE = SDOHCC + "SDOHCC-ServiceRequest"
SNOMED = "http://snomed.info/sct"
ORG_HEADER = "X-Test-Org"
ALL_SCOPES = parse_scopes("system/*.cruds")  # scopes pass; the workflow rules decide

# How a privileged caller walks a fresh Task to each status.
PATH_TO = {
    "draft": [], "requested": [], "accepted": ["accepted"],
    "in-progress": ["accepted", "in-progress"], "on-hold": ["accepted", "on-hold"],
    "rejected": ["rejected"], "cancelled": ["cancelled"], "failed": ["accepted", "failed"],
    "completed": ["accepted", "completed"], "entered-in-error": ["entered-in-error"],
}


class _TestPartyRequest(Request):
    """Flask request whose `fhir_access` comes from the test-only X-Test-Org header."""

    @property
    def fhir_access(self) -> AccessContext | None:
        org = self.headers.get(ORG_HEADER)  # the test header wins over the auth layer's
        if org:
            return AccessContext(organization=org, client_id="test", scopes=ALL_SCOPES)
        return self.environ.get("fhir.test_access")

    @fhir_access.setter
    def fhir_access(self, value: AccessContext | None) -> None:
        self.environ["fhir.test_access"] = value


def as_org(org: str | None) -> dict[str, str]:
    """Headers making a request act for `org` (no header: the privileged dev context)."""
    return {ORG_HEADER: org} if org else {}


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


def resulting(target: str) -> dict:
    """A Task.output of type resulting-activity pointing at `target`."""
    return {"type": {"coding": [{"system": SDOHCC_CODES, "code": "resulting-activity"}]},
            "valueReference": ref(target)}


def etag(resource: dict) -> dict[str, str]:
    return {"If-Match": f'W/"{resource["meta"]["versionId"]}"'}


def issue_text(response: Any) -> str:
    body = response.json()
    return " ".join(i.get("diagnostics", "") for i in body["issue"])


def expressions(response: Any) -> list[str]:
    return [e for i in response.json()["issue"] for e in i.get("expression", [])]


class Referrals:
    """Builds organizations, ServiceRequests and referral Tasks on the live server."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def create(self, resource: dict, org: str | None = None) -> dict:
        resp = self.server.post(resource["resourceType"], resource, headers=as_org(org))
        assert resp.status_code == 201, resp.text
        return resp.json()

    def org(self, name: str) -> str:
        body = {"resourceType": "Organization", "active": True, "name": name}
        return "Organization/" + self.create(body)["id"]

    def patient(self) -> str:
        mrn = uuid.uuid4().hex[:10]
        body = {"resourceType": "Patient", "name": [{"family": "Rivera", "given": ["Ana"]}],
                "identifier": [{"system": "http://hospital.example/mrn", "value": mrn}]}
        return "Patient/" + self.create(body)["id"]

    def service_request(self, patient: str, requester: str, status: str = "active",
                        org: str | None = None) -> dict:
        body = {"resourceType": "ServiceRequest", "meta": {"profile": [SR_PROFILE]},
                "status": status, "intent": "order",
                "category": [{"coding": [{"system": SNOMED, "code": "410606002"}]}],
                "code": {"coding": [{"system": SNOMED, "code": "384692006",
                                     "display": "Mental health counseling"}]},
                "subject": ref(patient), "requester": ref(requester), "priority": "routine",
                "authoredOn": "2026-11-01T10:00:00Z"}
        return self.create(body, org)

    def procedure(self, patient: str, service_request: str, status: str = "completed",
                  performers: tuple[str, ...] = ()) -> str:
        """An outcome Procedure; `performers` (organizations) may read it, so they may
        reference it (a write may only reference what its writer may read)."""
        body = {"resourceType": "Procedure", "status": status, "subject": ref(patient),
                "basedOn": [ref(service_request)], "performedDateTime": "2026-11-20",
                "code": {"coding": [{"system": SNOMED, "code": "75516001"}]}}
        if performers:
            body["performer"] = [{"actor": ref(org)} for org in performers]
        return "Procedure/" + self.create(body)["id"]

    @staticmethod
    def task_body(sr: dict, requester: str, owner: str | None, status: str = "requested",
                  **extra: Any) -> dict:
        body = {"resourceType": "Task", "meta": {"profile": [TASK_PROFILE]},
                "status": status, "intent": "order",
                "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                                     "code": "fulfill"}]},
                "focus": ref(f"ServiceRequest/{sr['id']}"), "for": sr["subject"],
                "authoredOn": "2026-11-02T10:00:00Z", "requester": ref(requester),
                "priority": "routine"}
        if owner:
            body["owner"] = ref(owner)
        body.update(extra)
        return body

    def task(self, sr: dict, requester: str, owner: str | None, status: str = "requested",
             procedure: str | None = None, **extra: Any) -> dict:
        """A referral Task walked by the privileged context to `status`."""
        first = "draft" if status == "draft" else "requested"
        task = self.create(self.task_body(sr, requester, owner, first, **extra))
        for step in PATH_TO[status]:
            task = self.put(moved(task, step, procedure)).json()
        assert task["status"] == status
        return task

    def tasks(self, specs: list[tuple[str, str, str | None, dict]],
              procedure: str | None = None) -> list[dict]:
        """Many referral Tasks at once, (status, requester, owner, extra) each, built with a
        few privileged transactions (one per step of the longest path)."""
        sr = self.sr
        tasks = [self.task_body(sr, req, own, "draft" if status == "draft" else "requested",
                                id=str(uuid.uuid4()), **extra)
                 for status, req, own, extra in specs]
        tasks = self._transaction([(t, None) for t in tasks])
        for step in range(max(len(PATH_TO[s[0]]) for s in specs)):
            todo = [i for i, s in enumerate(specs) if len(PATH_TO[s[0]]) > step]
            moves = [(moved(tasks[i], PATH_TO[specs[i][0]][step], procedure),
                      tasks[i]["meta"]["versionId"]) for i in todo]
            for i, task in zip(todo, self._transaction(moves), strict=True):
                tasks[i] = task
        assert [t["status"] for t in tasks] == [s[0] for s in specs]
        return tasks

    def _transaction(self, writes: list[tuple[dict, str | None]]) -> list[dict]:
        entries = []
        for task, version in writes:
            request = {"method": "PUT", "url": f"Task/{task['id']}"}
            if version:
                request["ifMatch"] = f'W/"{version}"'
            entries.append({"resource": task, "request": request})
        # Setup only: posted without the client's per-response schema check (a Bundle of many
        # Tasks is slow to check against the R4 schema's resource oneOf).
        resp = self.server.session.post(self.server.base, json={
            "resourceType": "Bundle", "type": "transaction", "entry": entries},
            headers={"Content-Type": "application/fhir+json"}, timeout=60)
        assert resp.status_code == 200, resp.text
        return [e["resource"] for e in resp.json()["entry"]]

    def put(self, task: dict, org: str | None = None, expect: int = 200,
            headers: dict | None = None) -> Any:
        hdrs = {**etag(task), **as_org(org), **(headers or {})}
        resp = self.server.put(f"Task/{task['id']}", task, headers=hdrs)
        assert resp.status_code == expect, resp.text
        return resp

    def read(self, task: dict) -> dict:
        return self.server.get(f"Task/{task['id']}").json()


def moved(task: dict, status: str, procedure: str | None = None, **changes: Any) -> dict:
    """`task` moved to `status`, carrying what that status needs (reason, outcome)."""
    new = copy.deepcopy(task)
    new["status"] = status
    new["statusReason"] = {"text": f"reason for {status}"}
    if status == "completed":
        assert procedure, "completion needs a Procedure"
        new["output"] = [resulting(procedure)]
    new.update(changes)
    return new


@pytest.fixture(scope="module")
def parties(server):
    """Installs the test identity header; returns the module's builder (a Referrals)."""
    server.app.request_class = _TestPartyRequest
    return Referrals(server)


@pytest.fixture(scope="module")
def world(parties):
    """Requester, owner, third party and platform organizations, a patient, an active SR."""
    w = parties
    w.requester, w.owner = w.org("Harbor Clinic"), w.org("Bay Counseling")
    w.third, w.platform = w.org("Other CBO"), w.org("Coordination Platform")
    w.patient_ref = w.patient()
    w.sr = w.service_request(w.patient_ref, w.requester)
    w.proc = w.procedure(w.patient_ref, f"ServiceRequest/{w.sr['id']}",
                         performers=(w.owner, w.platform, w.requester, w.third))
    # the source Task a platform's sub-Tasks are part of (the platform owns it)
    w.source_task = "Task/" + w.task(w.sr, w.requester, w.platform)["id"]
    return w


# -- every transition pair, for each party -----------------------------------------------
ROLES = ("requester", "owner", "third", "platform-owner", "platform-requester")


def _role_setup(w: Referrals, role: str) -> tuple[str, str, str, dict]:
    """(task requester, task owner, acting org, extra Task fields) for one role."""
    if role == "requester":
        return w.requester, w.owner, w.requester, {}
    if role == "owner":
        return w.requester, w.owner, w.owner, {}
    if role == "third":
        return w.requester, w.owner, w.third, {}
    if role == "platform-owner":  # the platform owns the source Task
        return w.requester, w.platform, w.platform, {}
    # the platform requested a sub-Task of a source Task
    return w.platform, w.owner, w.platform, {"partOf": [ref(w.source_task)]}


def _expected(role: str, old: str, new: str) -> int:
    if role == "third":
        return 404  # the organization policy hides other organizations' Tasks (no leak)
    if new not in EXPECTED_NEXT[old]:
        return 422
    may = REQUESTER_MAY_SET if role in ("requester", "platform-requester") else OWNER_MAY_SET
    return 200 if new in may else 403


@pytest.mark.parametrize("role", ROLES)
def test_every_transition_pair_for_each_party(world, server, role):
    requester, owner, actor, extra = _role_setup(world, role)
    pairs = [(old, new) for old in STATUSES for new in STATUSES if new != old]
    # one Task per from-state for refused moves (they change nothing), one per allowed move
    fresh = [p for p in pairs if _expected(role, *p) == 200]
    specs = [(s, requester, owner, extra) for s in STATUSES + [old for old, _ in fresh]]
    built = world.tasks(specs, world.proc)
    base, fresh_tasks = dict(zip(STATUSES, built, strict=False)), built[len(STATUSES):]
    fresh_for = dict(zip(fresh, fresh_tasks, strict=True))
    # All 90 moves in one batch (entries are independent): the batch write path, per pair.
    moves = [moved(fresh_for.get(p, base[p[0]]), p[1], world.proc) for p in pairs]
    entries = [{"resource": m, "request": {"method": "PUT", "url": f"Task/{m['id']}",
                                           "ifMatch": f'W/"{m["meta"]["versionId"]}"'}}
               for m in moves]
    resp = server.session.post(server.base, json={"resourceType": "Bundle", "type": "batch",
                                                  "entry": entries},
                               headers={"Content-Type": "application/fhir+json",
                                        **as_org(actor)}, timeout=120)
    assert resp.status_code == 200, resp.text
    results = resp.json()["entry"]
    for (old, new), entry in zip(pairs, results, strict=True):
        want = _expected(role, old, new)
        status = int(entry["response"]["status"].split()[0])
        assert status == want, (old, new, entry)
        if want == 404:
            continue
        if want == 200:
            assert entry["resource"]["status"] == new
            continue
        issue = entry["response"]["outcome"]["issue"][0]
        if want == 422:
            assert issue["code"] == "business-rule"
            assert old in issue["diagnostics"] and new in issue["diagnostics"]
            assert "allowed next" in issue["diagnostics"]
            assert issue["expression"][0].endswith("resource.status"), issue
        else:
            assert issue["code"] == "forbidden", (old, new, issue)
    for status, task in base.items():  # refused moves left no trace
        assert world.read(task)["meta"]["versionId"] == task["meta"]["versionId"], status


@pytest.mark.parametrize(("role", "old", "new"), [
    ("requester", "requested", "cancelled"), ("requester", "accepted", "in-progress"),
    ("owner", "in-progress", "completed"), ("owner", "completed", "in-progress"),
    ("third", "requested", "accepted"), ("platform-owner", "requested", "accepted"),
    ("platform-requester", "draft", "requested")])
def test_transition_by_put(world, role, old, new):
    requester, owner, actor, extra = _role_setup(world, role)
    task = world.tasks([(old, requester, owner, extra)], world.proc)[0]
    want = _expected(role, old, new)
    resp = world.put(moved(task, new, world.proc), actor, expect=want)
    if want != 200:
        assert resp.json()["issue"][0]["code"] == {422: "business-rule", 403: "forbidden",
                                                   404: "not-found"}[want]


def test_allowed_next_states_named_in_the_error(world):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    resp = world.put(moved(task, "completed", world.proc), world.owner, expect=422)
    assert "accepted, cancelled, entered-in-error, rejected" in issue_text(resp)


# -- field-level restrictions ---------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("focus", {"reference": "ServiceRequest/other"}), ("for", {"reference": "Patient/other"}),
    ("priority", "urgent"), ("description", "changed by owner"),
    ("requester", {"reference": "Organization/other"})])
def test_owner_may_change_only_status_reason_output(world, server, field, value):
    task = world.task(world.sr, world.requester, world.owner, "accepted")
    before = db_snapshot(server.database)
    resp = world.put(moved(task, "in-progress", **{field: value}), world.owner, expect=403)
    assert f"Task.{field}" in expressions(resp)
    assert db_snapshot(server.database) == before


def test_owner_changes_status_reason_and_output(world):
    task = world.task(world.sr, world.requester, world.owner, "accepted")
    changed = moved(task, "on-hold", output=[resulting(world.proc)])
    assert world.put(changed, world.owner).json()["status"] == "on-hold"


def test_requester_may_not_change_fixed_fields_after_draft(world):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    changed = copy.deepcopy(task)
    changed["for"] = ref(world.patient())
    resp = world.put(changed, world.requester, expect=422)
    assert "Task.for" in expressions(resp)
    edited = copy.deepcopy(task)
    edited["description"] = "Please call the patient in the afternoon"
    assert world.put(edited, world.requester).json()["description"].startswith("Please")


def test_third_party_may_not_create_or_delete(world, server):
    body = world.task_body(world.sr, world.requester, world.owner)
    resp = server.post("Task", body, headers=as_org(world.third))
    assert resp.status_code == 403, resp.text
    draft = world.task(world.sr, world.requester, world.owner, "draft")
    # another organization's Task is hidden from a third party: 404, never deleted
    assert server.delete(f"Task/{draft['id']}", headers=as_org(world.third)).status_code == 404
    assert server.delete(f"Task/{draft['id']}",
                         headers=as_org(world.requester)).status_code == 200


def test_requested_task_cannot_be_deleted(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    resp = server.delete(f"Task/{task['id']}", headers=as_org(world.requester))
    assert resp.status_code == 422 and "entered-in-error" in issue_text(resp)


def test_patch_path(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    resp = server.patch(f"Task/{task['id']}", ops, headers={**etag(task),
                                                             **as_org(world.owner)})
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    bad = [{"op": "replace", "path": "/status", "value": "requested"}]
    resp = server.patch(f"Task/{task['id']}", bad, headers={**etag(resp.json()),
                                                             **as_org(world.owner)})
    assert resp.status_code == 422 and "Task.status" in expressions(resp)
    focus = [{"op": "replace", "path": "/focus/reference", "value": "ServiceRequest/x"}]
    current = world.read(task)
    resp = server.patch(f"Task/{task['id']}", focus, headers={**etag(current),
                                                               **as_org(world.owner)})
    assert resp.status_code == 403 and "Task.focus" in expressions(resp)
    assert world.read(task)["meta"]["versionId"] == current["meta"]["versionId"]


def test_conditional_update_path(world, server):
    tag = uuid.uuid4().hex
    ident = [{"system": "http://clinic.example/referral", "value": tag}]
    task = world.create(world.task_body(world.sr, world.requester, world.owner,
                                        identifier=ident))
    url = f"Task?identifier=http://clinic.example/referral|{tag}"
    resp = server.put(url, moved(task, "accepted"),
                      headers={**etag(task), **as_org(world.owner)})
    assert resp.status_code == 200 and resp.json()["status"] == "accepted", resp.text
    resp = server.put(url, moved(resp.json(), "requested"),
                      headers={**etag(resp.json()), **as_org(world.owner)})
    assert resp.status_code == 422 and "Task.status" in expressions(resp)
    current = world.read(task)
    resp = server.put(url, moved(current, "in-progress"), headers={**etag(current),
                                                                    **as_org(world.third)})
    # refused: 403 by the workflow rules, or hidden by the auth compartment (no match -> the
    # body id exists elsewhere -> 409); either way nothing changed
    assert resp.status_code in (403, 409), resp.text
    assert world.read(task)["meta"]["versionId"] == current["meta"]["versionId"]


def _tx(entries: list[dict], kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def _put_entry(task: dict) -> dict:
    return {"resource": task, "request": {"method": "PUT", "url": f"Task/{task['id']}",
                                          "ifMatch": f'W/"{task["meta"]["versionId"]}"'}}


def test_transaction_path_all_or_nothing(world, server):
    ok = world.task(world.sr, world.requester, world.owner, "requested")
    bad = world.task(world.sr, world.requester, world.owner, "requested")
    before = db_snapshot(server.database)
    bundle = _tx([_put_entry(moved(ok, "accepted")), _put_entry(moved(bad, "completed",
                                                                      world.proc))])
    resp = server.post("", bundle, headers=as_org(world.owner))
    assert resp.status_code == 422, resp.text
    assert "accepted, cancelled, entered-in-error, rejected" in issue_text(resp)
    assert db_snapshot(server.database) == before
    good = _tx([_put_entry(moved(ok, "accepted")), _put_entry(moved(bad, "rejected"))])
    resp = server.post("", good, headers=as_org(world.owner))
    assert resp.status_code == 200, resp.text
    assert world.read(ok)["status"] == "accepted" and world.read(bad)["status"] == "rejected"


def test_batch_path_entry_by_entry(world, server):
    ok = world.task(world.sr, world.requester, world.owner, "requested")
    bad = world.task(world.sr, world.requester, world.owner, "requested")
    batch = _tx([_put_entry(moved(ok, "accepted")), _put_entry(moved(bad, "in-progress"))],
                "batch")
    resp = server.post("", batch, headers=as_org(world.owner))
    assert resp.status_code == 200, resp.text
    statuses = [e["response"]["status"] for e in resp.json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("422")
    assert world.read(bad)["status"] == "requested"


def test_transaction_creating_task_for_other_requester_forbidden(world, server):
    body = world.task_body(world.sr, world.requester, world.owner)
    bundle = _tx([{"resource": body, "request": {"method": "POST", "url": "Task"}}])
    resp = server.post("", bundle, headers=as_org(world.owner))
    assert resp.status_code == 403, resp.text


# -- version-aware updates ------------------------------------------------------------------
def test_if_match_required_and_stale_refused(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    before = db_snapshot(server.database)
    resp = server.put(f"Task/{task['id']}", moved(task, "accepted"), headers=as_org(world.owner))
    assert resp.status_code == 428, resp.text
    accepted = world.put(moved(task, "accepted"), world.owner).json()
    assert db_snapshot(server.database) != before
    resp = server.put(f"Task/{task['id']}", moved(accepted, "in-progress"),
                      headers={"If-Match": 'W/"1"', **as_org(world.owner)})
    assert resp.status_code == 412, resp.text
    assert world.read(task)["status"] == "accepted"


# -- bad input: each a clear 4xx, nothing changed ----------------------------------------------
@pytest.mark.parametrize(("change", "status", "code", "expression"), [
    ({"status": "bogus"}, 400, "code-invalid", "Task.status"),  # base R4 code check
    ({"status": "received"}, 422, "code-invalid", "Task.status"),
    ({"status": "ready"}, 422, "code-invalid", "Task.status"),
    ({"status": "rejected", "statusReason": None}, 422, None, "Task.statusReason.text"),
    ({"status": "completed", "output": None}, 422, None, "Task.output"),
])
def test_bad_input_refused_without_change(world, server, change, status, code, expression):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    if change["status"] == "completed":
        task = world.put(moved(task, "accepted"), world.owner).json()
    new = changed(task, **change)
    before = db_snapshot(server.database)
    resp = server.put(f"Task/{task['id']}", new, headers={**etag(task), **as_org(world.owner)})
    assert resp.status_code == status, resp.text
    if code:
        assert resp.json()["issue"][0]["code"] == code
    assert any(e.startswith(expression) for e in expressions(resp)), resp.text
    assert db_snapshot(server.database) == before


def test_create_for_inactive_service_request_refused(world, server):
    draft_sr = world.service_request(world.patient_ref, world.requester, status="draft")
    body = world.task_body(draft_sr, world.requester, world.owner)
    resp = server.post("Task", body, headers=as_org(world.requester))
    assert resp.status_code == 422 and "Task.focus" in expressions(resp), resp.text
    draft = world.task_body(draft_sr, world.requester, world.owner, status="draft")
    assert server.post("Task", draft, headers=as_org(world.requester)).status_code == 201


# -- ServiceRequest lifecycle -------------------------------------------------------------------
@pytest.mark.parametrize("sr_status", ["revoked", "completed"])
def test_service_request_end_cancels_open_tasks(world, server, sr_status):
    sr = world.service_request(world.patient_ref, world.requester)
    proc = world.procedure(world.patient_ref, f"ServiceRequest/{sr['id']}",
                           performers=(world.owner,))
    open_task = world.task(sr, world.requester, world.owner, "in-progress", proc)
    done = world.task(sr, world.requester, world.owner, "completed", proc)
    third = server.put(f"ServiceRequest/{sr['id']}", {**sr, "status": sr_status},
                       headers=as_org(world.third))
    assert third.status_code in (403, 404), third.text  # 404: hidden by the auth layer
    resp = server.put(f"ServiceRequest/{sr['id']}", {**sr, "status": sr_status},
                      headers=as_org(world.requester))
    assert resp.status_code == 200, resp.text
    followed = world.read(open_task)
    assert followed["status"] == "cancelled"
    assert sr_status in followed["statusReason"]["text"]
    assert world.read(done)["status"] == "completed"
    again = world.task_body(sr, world.requester, world.owner)
    assert server.post("Task", again, headers=as_org(world.requester)).status_code == 422


# -- $redirect ------------------------------------------------------------------------------
def _redirect(server, task: dict, target: str, reason: str = "No capacity",
              org: str | None = None) -> Any:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "target", "valueReference": ref(target)},
        {"name": "reason", "valueString": reason}]}
    return server.post(f"Task/{task['id']}/$redirect", body, headers=as_org(org))


def test_redirect_twice_and_timeline_shows_chain(world, server):
    first = world.task(world.sr, world.requester, world.owner, "requested")
    resp = _redirect(server, first, world.third, org=world.owner)
    assert resp.status_code == 201, resp.text
    second = resp.json()
    assert second["owner"]["reference"] == world.third and second["status"] == "requested"
    resp = _redirect(server, second, world.platform, "Needs Spanish-speaking therapist",
                     org=world.third)
    assert resp.status_code == 201, resp.text
    third = resp.json()
    assert world.read(first)["status"] == "rejected"
    assert world.read(second)["statusReason"]["text"] == "Needs Spanish-speaking therapist"
    timeline = server.get(f"Task/{second['id']}/$timeline").json()
    names = {p["name"]: p for p in timeline["parameter"]}
    assert names["replaces"]["valueReference"]["reference"] == f"Task/{first['id']}"
    assert names["redirectedTo"]["valueReference"]["reference"] == f"Task/{third['id']}"


def test_redirect_is_version_aware_with_if_match(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "target", "valueReference": ref(world.third)},
        {"name": "reason", "valueString": "No capacity"}]}
    path = f"Task/{task['id']}/$redirect"
    stale = server.post(path, body, headers={**as_org(world.owner), "If-Match": 'W/"7"'})
    assert stale.status_code == 412 and world.read(task)["status"] == "requested"
    bad = server.post(path, body, headers={**as_org(world.owner), "If-Match": "seven"})
    assert bad.status_code == 400
    version = task["meta"]["versionId"]
    fresh = server.post(path, body, headers={**as_org(world.owner),
                                             "If-Match": f'W/"{version}"'})
    assert fresh.status_code == 201, fresh.text


def test_redirect_bad_input(world, server):
    task = world.task(world.sr, world.requester, world.owner, "requested")
    before = db_snapshot(server.database)
    unknown = _redirect(server, task, "Organization/does-not-exist", org=world.owner)
    assert unknown.status_code == 422 and unknown.json()["issue"][0]["code"] == "not-found"
    same = _redirect(server, task, world.owner, org=world.owner)
    assert same.status_code == 422
    by_third = _redirect(server, task, world.platform, org=world.third)
    assert by_third.status_code in (403, 404)  # 404: hidden by the auth compartment
    missing = server.post(f"Task/{task['id']}/$redirect",
                          {"resourceType": "Parameters", "parameter": [
                              {"name": "target", "valueReference": ref(world.third)}]})
    assert missing.status_code == 400
    assert db_snapshot(server.database) == before


def test_cancellation_from_either_side(world):
    for actor in (world.requester, world.owner):
        task = world.task(world.sr, world.requester, world.owner, "accepted")
        missing_reason = moved(task, "cancelled")
        del missing_reason["statusReason"]
        world.put(missing_reason, actor, expect=422)
        assert world.put(moved(task, "cancelled"), actor).json()["status"] == "cancelled"


def test_metrics_csv_and_parameters(world, server):
    params = {"owner": world.owner}
    body = server.get("$referral-metrics", params=params).json()
    assert body["resourceType"] == "Parameters"
    owners = groups(body, "owner")
    assert list(owners) == [world.owner]
    assert owners[world.owner]["total"] > 10
    assert groups(body, "all")["all"]["total"] == owners[world.owner]["total"]
    csv = server.get("$referral-metrics", params={**params, "_format": "text/csv"})
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    rows = csv_rows(csv.text)
    assert [(r["dimension"], r["key"]) for r in rows] == [("all", "all"), ("owner", world.owner)]

