"""Open referrals over HTTP with real tokens, on both databases: what each candidate sees,
the claim race (20 concurrent accepts, exactly one owner), declines, the rejection when every
candidate declined, the requester's notifications and the new-referral intake e-mail."""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from fhir_server.workflow.canonical import EXT_CANDIDATE, STATUS_REASON_SYSTEM
from fhir_server.workflow.open_referral import candidates, declined_entry
from subscriptions.channels import SmtpSettings
from subscriptions.testing import HookReceiver, smtp_receiver
from tests import web_support
from tests.test_subscriptions_delivery import Running, fast_config
from tests.web_support import csrf_of, sign_in_http
from tests.workspace_support import build_world, send_referral

web_server = web_support.web_server  # the live server fixture, one per module

TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server.network)


def offer(world, *orgs: str, **kw) -> dict:
    return send_referral(world, world.patient, candidates=orgs, **kw)


def etag(task: dict) -> dict:
    return {"If-Match": f'W/"{task["meta"]["versionId"]}"'}


def claim(http, task: dict, org: str):
    new = copy.deepcopy(task)
    new.update(status="accepted", owner={"reference": org})
    return http.put(f"Task/{task['id']}", new, headers=etag(task))


def decline(http, task: dict, org: str, text: str = "No capacity this month"):
    new = copy.deepcopy(task)
    new["extension"] = [e for e in new["extension"] if not (
        e["url"] == EXT_CANDIDATE and e["valueReference"]["reference"] == org)]
    new["extension"].append(declined_entry(org, text, "no-capacity"))
    return http.put(f"Task/{task['id']}", new, headers=etag(task))


def test_an_open_referral_is_conformant_and_searchable_by_candidate(world):
    task = offer(world, world.lakeside.organization, world.hillside.organization)
    assert "owner" not in task and task["performerType"][0]["coding"][0]["code"] == "therapy"
    assert candidates(task) == [world.lakeside.organization, world.hillside.organization]
    sr = world.clinic.get(task["focus"]["reference"]).json()
    assert "performer" not in sr  # the candidates are on the Task only
    lakeside = world.client("lakeside")
    found = lakeside.get("Task", params={"candidate": world.lakeside.organization,
                                         "status": "requested"}).json()
    assert task["id"] in [e["resource"]["id"] for e in found.get("entry", [])]
    checked = world.clinic.post("Task/$validate", {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": task}]})
    assert checked.status_code == 200, checked.text
    assert not [i for i in checked.json()["issue"] if i["severity"] in ("error", "fatal")]


def test_candidates_see_the_open_referral_as_its_owner_would(world):
    task = offer(world, world.lakeside.organization, world.hillside.organization)
    sr_ref = task["focus"]["reference"]
    qr = world.clinic.get("QuestionnaireResponse", params={
        "subject": f"Patient/{world.patient}"}).json()["entry"][0]["resource"]["id"]
    for org in ("lakeside", "hillside"):
        http = world.client(org)
        assert http.get(f"Task/{task['id']}").status_code == 200
        assert http.get(sr_ref).status_code == 200
        assert http.get(f"Patient/{world.patient}").status_code == 200
        assert http.get(f"QuestionnaireResponse/{qr}").status_code == 200  # consent given
        bundle = http.get("Task", params={"_id": task["id"], "_include": "Task:patient"}).json()
        assert sorted(e["resource"]["resourceType"] for e in bundle["entry"]) == [
            "Patient", "Task"]
    bystander = world.client("bayview")
    assert bystander.get(f"Task/{task['id']}").status_code == 404
    assert bystander.get(sr_ref).status_code == 404
    assert bystander.get(f"Patient/{world.patient}").status_code == 404
    assert not bystander.get("Task", params={"_id": task["id"]}).json().get("entry")


def test_without_consent_candidates_see_no_screening(world):
    patient = world.net.screened_patient(world.clinic, world.doctor, "Ana", "Quiroga",
                                         [1, 1, 1, 1, 1, 1, 1, 1, 0])
    task = send_referral(world, patient, candidates=(
        world.lakeside.organization, world.hillside.organization), consent=False)
    screening = [r["reference"] for r in world.clinic.get(
        task["focus"]["reference"]).json()["supportingInfo"]
        if r["reference"].startswith("QuestionnaireResponse/")]
    assert screening
    hillside = world.client("hillside")
    assert hillside.get(f"Task/{task['id']}").status_code == 200
    assert hillside.get(f"Patient/{patient}").status_code == 200
    assert [hillside.get(ref).status_code for ref in screening] == [404] * len(screening)


def test_the_first_accept_owns_it_and_the_other_sees_it_withdrawn(world):
    task = offer(world, world.lakeside.organization, world.hillside.organization)
    lakeside, hillside = world.client("lakeside"), world.client("hillside")
    seen_by_hillside = hillside.get(f"Task/{task['id']}").json()
    won = claim(lakeside, task, world.lakeside.organization)
    assert won.status_code == 200, won.text
    assert won.json()["owner"] == {"reference": world.lakeside.organization}
    late = claim(hillside, seen_by_hillside, world.hillside.organization)
    assert late.status_code in (404, 412), late.text  # withdrawn: no longer offered to it
    assert hillside.get(f"Task/{task['id']}").status_code == 404
    assert lakeside.get(f"Patient/{world.patient}").status_code == 200  # the owner's now
    assert world.client("bayview").get(f"Task/{task['id']}").status_code == 404


def test_twenty_concurrent_accepts_make_exactly_one_owner(world):
    net = world.net
    orgs = [f"race{i}" for i in range(20)]
    for org in orgs:
        net.organization(org, f"Race Provider {org}")
    clients = {org: world.client(org) for org in orgs}
    task = offer(world, *(f"Organization/{o}" for o in orgs))
    bodies = {org: clients[org].get(f"Task/{task['id']}").json() for org in orgs}

    def accept(org: str) -> int:
        return claim(clients[org], bodies[org], f"Organization/{org}").status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = dict(zip(orgs, pool.map(accept, orgs), strict=True))
    winners = [org for org, status in statuses.items() if status == 200]
    assert len(winners) == 1, statuses
    assert set(statuses.values()) <= {200, 404, 412}, statuses
    final = world.clinic.get(f"Task/{task['id']}").json()
    assert final["owner"] == {"reference": f"Organization/{winners[0]}"}
    assert final["status"] == "accepted" and final["meta"]["versionId"] == "2"


def test_only_a_candidate_may_claim_and_declines_are_its_own(world):
    task = offer(world, world.lakeside.organization)
    bystander = world.client("bayview")
    assert claim(bystander, task, world.outsider.organization).status_code == 404
    hillside = world.client("hillside")
    assert claim(hillside, task, world.hillside.organization).status_code == 404
    lakeside = world.client("lakeside")
    own = decline(lakeside, task, world.lakeside.organization)
    assert own.status_code == 200, own.text  # its own decline is fine...
    assert own.json()["status"] == "rejected"  # ...and as the only candidate, it rejects


def test_declines_then_rejection_and_the_requester_hears_each(world, web_server):
    receiver = HookReceiver()
    try:
        sub = world.clinic.post("Subscription", {
            "resourceType": "Subscription", "status": "requested", "reason": "tracker",
            "criteria": TASK_TOPIC, "_criteria": {"extension": [{
                "url": BP + "backport-filter-criteria",
                "valueString": f"Task?requester={world.doctor.role}"}]},
            "channel": {"type": "rest-hook", "endpoint": receiver.url,
                        "payload": "application/fhir+json", "_payload": {"extension": [{
                            "url": BP + "backport-payload-content", "valueCode": "id-only"}]}}})
        assert sub.status_code == 201, sub.text
        task = offer(world, world.lakeside.organization, world.hillside.organization)
        lakeside, hillside = world.client("lakeside"), world.client("hillside")
        first = decline(lakeside, task, world.lakeside.organization, "Waiting list closed")
        assert first.status_code == 200, first.text
        after = first.json()
        assert after["status"] == "requested"
        assert candidates(after) == [world.hillside.organization]
        assert lakeside.get(f"Task/{task['id']}").status_code == 404  # declined: gone
        current = hillside.get(f"Task/{task['id']}").json()
        last = decline(hillside, current, world.hillside.organization, "Out of our area")
        assert last.status_code == 200, last.text
        closed = world.clinic.get(f"Task/{task['id']}").json()
        assert closed["status"] == "rejected"
        assert closed["statusReason"]["coding"] == [
            {"system": STATUS_REASON_SYSTEM, "code": "all-candidates-declined"}]
        assert "Waiting list closed" in closed["statusReason"]["text"]
        timeline = world.clinic.get(f"Task/{task['id']}/$timeline").json()
        kinds = [p["valueCode"] for e in timeline["parameter"] if e["name"] == "event"
                 for p in e["part"] if p["name"] == "kind"]
        assert kinds == ["status", "declined", "declined", "status"]
        with Running(web_server.db, fast_config(base_url=web_server.base)):
            assert receiver.wait_for(lambda r: sum(
                len(x.event_numbers) for x in r.of_kind("event-notification")) >= 3, 20)
        notified = [x for x in receiver.of_kind("event-notification")]
        focus = {p["valueReference"]["reference"].rsplit("/", 1)[-1]
                 for x in notified for e in x.status_parameters["parameter"]
                 if e["name"] == "notification-event" for p in e["part"]
                 if p["name"] == "focus"}
        assert task["id"] in focus
    finally:
        receiver.stop()
        world.clinic.delete(f"Subscription/{sub.json()['id']}")


def test_intake_email_names_no_patient_and_links_the_workspace(world, web_server):
    controller, messages = smtp_receiver()
    browser = sign_in_http(web_server, world.hillside.username, "/workspace")
    try:
        page = browser.get(f"{web_server.root}/workspace/settings", timeout=30).text
        saved = browser.post(f"{web_server.root}/workspace/settings", data={
            "csrf": csrf_of(page), "action": "save", "email": "intake@hillside.example.org"},
            timeout=30)
        assert "will be e-mailed to intake@hillside.example.org" in saved.text, saved.text
        send_referral(world, world.other_patient, owner=world.hillside.organization)
        offer(world, world.hillside.organization, world.lakeside.organization)
        smtp = SmtpSettings("127.0.0.1", controller.port, "fhir@example.org")
        with Running(web_server.db, fast_config(base_url=web_server.base, smtp=smtp)):
            deadline = time.time() + 30
            while time.time() < deadline and len([
                    m for m in messages if "event-notification" in m["Subject"]]) < 2:
                time.sleep(0.1)
    finally:
        controller.stop()
    notices = [m for m in messages if "event-notification" in m["Subject"]]
    assert len(notices) >= 2, [m["Subject"] for m in messages]
    subjects = {m["Subject"].split(" (")[0] for m in notices}
    assert subjects == {"New referrals for Hillside Counseling",
                        "New open referrals offered for Hillside Counseling"}
    for message in notices:
        assert message["To"] == "intake@hillside.example.org"
        text = message.as_string()
        assert f"{web_server.root}/workspace/" in text
        for secret in ("Delgado", "Marisol", "Reyes", "Tomas", "MRN-", world.patient,
                       world.other_patient):
            assert secret not in text
    stop = browser.get(f"{web_server.root}/workspace/settings", timeout=30).text
    assert "intake@hillside.example.org" in stop
    off = browser.post(f"{web_server.root}/workspace/settings", data={
        "csrf": csrf_of(stop), "action": "stop"}, timeout=30)
    assert "No e-mail is sent now" in off.text
