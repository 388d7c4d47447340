"""Regression tests for the stop-ship findings of the adversarial probe, over HTTP with real
Backend Services tokens and real user sign-ins: a partner must not open other
organizations' patient data by writing, launching or calling operations."""

from __future__ import annotations

import pytest
import requests

from fhir_server.auth.cli import register_cli
from fhir_server.auth.registry import deactivate_client
from tests.samples import sample
from tests.security_support import APP, SecureServer, create, directory, ref, referral, start

ORGS = ["A", "A2", "B", "C", "E", "RS"]


@pytest.fixture(scope="module")
def world(database):
    """Clinic A refers patient 1 to B with consent and patient 2 to C without; clinic A2
    screens its own patient 3; E is a partner with no business with any of them."""
    server = start(database)
    directory(server, ORGS)
    for client, org in (("ehr-a", "A"), ("ehr-a2", "A2"), ("cbo-b", "B"), ("cbo-c", "C"),
                        ("evil", "E")):
        server.register(client, org)
    server.register("rs", "RS", "system/Task.rs", resource_server=True)
    for user, org in (("dr_a", "A"), ("dr_e", "E"), ("dr_a2", "A2")):
        server.add_user(user, org)
    clinic = server.client("ehr-a")
    server.r1 = referral(clinic, "A", "B", patient_name="Rivera", consent=True)
    server.r2 = referral(clinic, "A", "C", patient_name="Rivera", consent=False)
    server.r3 = referral(server.client("ehr-a2"), "A2", "A2", patient_name="Okafor",
                         consent=False, phq9=[3, 3, 3, 3, 3, 3, 3, 3, 2])
    yield server
    server.live.stop()


def status(http, target: str) -> int:
    return http.get(target).status_code


def issue_expressions(resp: requests.Response) -> list[str]:
    return [e for i in resp.json()["issue"] for e in i.get("expression", [])]


# -- 1. consent gate bypass by writing -----------------------------------------------------
def test_self_made_service_request_cannot_point_at_hidden_clinical_data(world):
    c = world.client("cbo-c")
    assert status(c, world.r2["sr"]) == 200 and status(c, world.r2["patient"]) == 200
    assert status(c, world.r2["qr"]) == 404  # no consent for referral 2
    forged = sample("ServiceRequest", subject=ref(world.r2["patient"]),
                    requester=ref("Organization/C"), performer=[ref("Organization/C")],
                    supportingInfo=[ref(world.r2["qr"])],
                    reasonReference=[ref(world.r2["condition"])])
    resp = c.post("ServiceRequest", forged)
    assert resp.status_code == 422, resp.text
    assert issue_expressions(resp) == ["ServiceRequest.supportingInfo[0]",
                                       "ServiceRequest.reasonReference[0]"]
    assert status(c, world.r2["qr"]) == 404 and status(c, world.r2["condition"]) == 404


def test_hidden_and_missing_targets_get_the_same_answer(world):
    e = world.client("evil")
    hidden = e.post("Observation", sample("Observation", subject=ref(world.r3["patient"])))
    missing = e.post("Observation", sample("Observation", subject=ref("Patient/no-such-one")))
    assert hidden.status_code == missing.status_code == 422
    text = [i["diagnostics"].split("'")[2] for r in (hidden, missing)
            for i in r.json()["issue"]]
    assert text[0] == text[1]  # the same words after the reference itself
    assert status(e, world.r3["patient"]) == 404


def test_any_write_path_checks_references(world):
    """PUT (update-as-create), PATCH, conditional create and transaction entries."""
    e = world.client("evil")
    obs = sample("Observation", subject=ref("Patient/p-e"), id="obs-e")
    assert e.put("Patient/p-e", sample("Patient", id="p-e")).status_code == 201
    assert e.put("Observation/obs-e", obs).status_code == 201
    patch = e.patch("Observation/obs-e", [{"op": "replace", "path": "/subject",
                                           "value": ref(world.r1["patient"])}])
    assert patch.status_code == 422, patch.text
    put = e.put("Observation/obs-e", dict(obs, subject=ref(world.r1["patient"])))
    assert put.status_code == 422
    fresh = {k: v for k, v in obs.items() if k != "id"}
    cond = e.post("Observation", dict(fresh, subject=ref(world.r1["patient"])),
                  headers={"If-None-Exist": "code=http://loinc.org|44261-6&subject=Patient/x"})
    assert cond.status_code == 422
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
         "resource": sample("Observation", subject=ref("Patient/p-e")),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": sample("Observation", subject=ref(world.r1["patient"])),
         "request": {"method": "POST", "url": "Observation"}}]}
    resp = e.post("", bundle)
    assert resp.status_code == 422
    assert issue_expressions(resp) == ["Bundle.entry[1].resource.subject"]
    assert status(e, world.r1["patient"]) == 404


def test_own_service_request_keeps_no_access_after_consent_is_withdrawn(world):
    """B sees referral 1's screening through the active Consent; a ServiceRequest B writes
    that points at it must not keep that access once the clinic withdraws consent."""
    b, clinic = world.client("cbo-b"), world.client("ehr-a")
    assert status(b, world.r1["qr"]) == 200
    own = create(b, sample("ServiceRequest", subject=ref(world.r1["patient"]),
                           requester=ref("Organization/B"), supportingInfo=[ref(world.r1["qr"])]))
    consent = clinic.get(world.r1["consent"]).json()
    assert clinic.put(world.r1["consent"], dict(consent, status="inactive")).status_code == 200
    try:
        assert status(b, world.r1["qr"]) == 404
        assert status(b, world.r1["condition"]) == 404
        assert status(b, f"ServiceRequest/{own['id']}") == 200  # what B wrote stays B's
    finally:
        fresh = clinic.get(world.r1["consent"]).json()
        assert clinic.put(world.r1["consent"], dict(fresh, status="active")).status_code == 200


def test_recipient_cannot_grant_itself_consent(world):
    """C adds its own active Consent to the referral it received: the clinical details
    stay hidden (only a Consent written by the referral's author opens them)."""
    c = world.client("cbo-c")
    own = create(c, sample("Consent", patient=ref(world.r2["patient"])))
    sr = c.get(world.r2["sr"]).json()
    sr["supportingInfo"] = [ref(f"Consent/{own['id']}"), *sr["supportingInfo"]]
    c.put(world.r2["sr"], sr)  # whatever the workflow rules answer, nothing may open
    assert status(c, world.r2["qr"]) == 404


# -- 2. a foreign referral pulled in by a self-made Task ---------------------------------
def test_self_made_task_cannot_focus_a_foreign_referral(world):
    e = world.client("evil")
    task = sample("Task", focus=ref(world.r1["sr"]), requester=ref("Organization/E"),
                  owner=ref("Organization/E"))
    task["for"] = ref(world.r1["patient"])
    resp = e.post("Task", task)
    assert resp.status_code == 422, resp.text
    assert set(issue_expressions(resp)) == {"Task.focus", "Task.for"}
    for key in ("sr", "patient", "consent", "qr", "condition", "task"):
        assert status(e, world.r1[key]) == 404, key


# -- 3. the standalone-launch patient picker and launch context -----------------------------
def test_patient_picker_lists_only_patients_the_user_may_see(world):
    mine = world.picker_page(world.browser("dr_a"), "Rivera")
    foreign = world.picker_page(world.browser("dr_e"), "Rivera")
    for key in ("r1", "r2"):
        patient_id = getattr(world, key)["patient"].split("/")[1]
        assert patient_id in mine
        assert patient_id not in foreign
    other_clinic = world.picker_page(world.browser("dr_a2"), "Rivera")
    assert all(getattr(world, k)["patient"].split("/")[1] not in other_clinic
               for k in ("r1", "r2"))


def test_launch_cannot_bind_a_hidden_patient(world):
    hidden = world.r1["patient"].split("/")[1]
    for user, expected in (("dr_e", 400), ("dr_a", 302)):
        resp = world.browser(user).get(f"{world.root}/auth/launch", params={
            "client_id": APP, "patient": hidden}, allow_redirects=False, timeout=30)
        assert resp.status_code == expected, (user, resp.text)
    missing = world.browser("dr_e").get(f"{world.root}/auth/launch", params={
        "client_id": APP, "patient": "no-such-patient"}, allow_redirects=False, timeout=30)
    assert missing.status_code == 400 and missing.text.replace("no-such-patient", hidden) == (
        world.browser("dr_e").get(f"{world.root}/auth/launch", params={
            "client_id": APP, "patient": hidden}, allow_redirects=False, timeout=30).text)


# -- 4. $recommend-care and the consent gate ---------------------------------------------
def test_recommend_care_follows_the_consent_gate(world):
    c, clinic = world.client("cbo-c"), world.client("ehr-a")
    own = clinic.get(f"{world.r2['patient']}/$recommend-care")
    assert own.status_code == 200 and "44261-6" in own.text or "PHQ" in own.text
    seen = c.get(f"{world.r2['patient']}/$recommend-care")
    assert seen.status_code == 200, seen.text  # the patient is visible through the referral
    assert own.json() != seen.json()
    assert "moderately severe" not in seen.text.lower() and "17" not in seen.text
    e = world.client("evil")
    assert e.get(f"{world.r3['patient']}/$recommend-care").status_code == 404


# -- 5. $referral-metrics limited to the caller ---------------------------------------------
def test_referral_metrics_count_only_the_callers_referrals(world):
    clinic = world.client("ehr-a")
    task = clinic.get(world.r1["task"]).json()
    task.update(status="cancelled", statusReason={"text": "patient moved to Ohio"})
    assert clinic.put(world.r1["task"], task).status_code == 200
    c = world.client("cbo-c")
    mine = c.get("$referral-metrics")
    assert mine.status_code == 200, mine.text
    assert "Ohio" not in mine.text and "Organization/B" not in mine.text
    assert "Ohio" in clinic.get("$referral-metrics").text or clinic.get(
        "$referral-metrics").status_code == 200
    csv = c.get("$referral-metrics", params={"_format": "text/csv"})
    assert csv.status_code == 200 and "Ohio" not in csv.text


# -- tokens ------------------------------------------------------------------------------
def _introspect(world: SecureServer, bearer: str, token: str) -> dict:
    resp = requests.post(f"{world.root}/auth/introspect", data={"token": token},
                         headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_introspection_only_of_own_tokens_or_by_a_resource_server(world):
    b, c = world.client("cbo-b"), world.client("cbo-c")
    assert _introspect(world, c.access_token, b.access_token) == {"active": False}
    assert _introspect(world, b.access_token, b.access_token)["active"] is True
    rs = world.client("rs", "system/Task.rs")
    info = _introspect(world, rs.access_token, b.access_token)
    assert info["active"] is True and info["client_id"] == "cbo-b"


def test_deactivated_client_tokens_stop_at_once(world):
    world.register("short-lived", "B")
    http = world.client("short-lived")
    assert http.get("Task").status_code == 200
    with world.database.write() as conn:
        assert deactivate_client(conn, "short-lived")
    assert http.get("Task").status_code == 401
    assert world.token("short-lived").status_code == 401


def test_reregistered_client_loses_its_old_organization_tokens(world):
    world.register("movable", "B")
    http = world.client("movable")
    assert status(http, world.r1["task"]) == 200  # B owns referral 1's Task
    world.register("movable", "E")  # the same client id, now for another organization
    assert http.get("Task").status_code == 401
    assert status(world.client("movable"), world.r1["task"]) == 404


def test_sign_in_lockout_and_administrator_unlock(world, capsys):
    world.add_user("dr_locked", "A")
    wrong = {"username": "dr_locked", "password": "not the password", "next": "/auth/login"}
    for _ in range(3):
        r = requests.post(f"{world.root}/auth/login", data=wrong, allow_redirects=False,
                          timeout=30)
        assert r.status_code == 401
    right = dict(wrong, password="correct horse battery")
    r = requests.post(f"{world.root}/auth/login", data=right, allow_redirects=False, timeout=30)
    assert r.status_code == 429 and "Try again in" in r.text and int(r.headers["Retry-After"])
    import argparse

    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["users", "unlock", "--username", "dr_locked"])
    assert args.auth_handler(args, world.database) == 0
    assert "unlocked: user:dr_locked" in capsys.readouterr().out
    r = requests.post(f"{world.root}/auth/login", data=right, allow_redirects=False, timeout=30)
    assert r.status_code == 303


# -- Subscriptions belong to the organization that created them --------------------------
def test_partner_manages_its_own_subscription(world):
    e = world.client("evil")
    body = sample("Subscription")
    body["_criteria"]["extension"][0]["valueString"] = "Task?owner=Organization/E"
    created = e.post("Subscription", body)
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert e.get(f"Subscription/{sid}").status_code == 200
    assert e.get(f"Subscription/{sid}/$status").status_code == 200
    assert e.get(f"Subscription/{sid}/$events").status_code == 200
    current = e.get(f"Subscription/{sid}").json()
    assert e.put(f"Subscription/{sid}", dict(current, reason="changed")).status_code == 200
    assert status(world.client("cbo-b"), f"Subscription/{sid}") == 404
    assert e.delete(f"Subscription/{sid}").status_code in (200, 204)


# -- the policy of issue 15: a clinic sees its own screening --------------------------------
def test_clinic_staff_see_their_patients_screening_and_another_clinic_sees_none(world):
    clinic, other = world.client("ehr-a"), world.client("ehr-a2")
    observations = clinic.get("Observation", params={
        "derived-from": world.r2["qr"], "_count": 50}).json()
    assert observations.get("total", 0) >= 10  # the scored PHQ-9: items and total
    for key in ("patient", "qr", "condition", "sr", "task"):
        assert status(other, world.r2[key]) == 404, key
    assert other.get("Observation", params={"derived-from": world.r2["qr"]}).json().get(
        "total", 0) == 0
    assert other.get("Patient", params={"name": "Rivera"}).json().get("total", 0) == 0
