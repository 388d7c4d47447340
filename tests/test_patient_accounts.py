"""Patient accounts: `users add --patient`, sign-in that always binds the patient's own
record with `patient/` scopes only (never `user/` or `system/`, which a user without an
organization would hold unnarrowed), no EHR launches, and a token that stays bound even if
its grant said otherwise."""

from __future__ import annotations

import argparse
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests

from fhir_server.auth.cli import register_cli
from fhir_server.auth.registry import get_user
from fhir_server.auth.tokens import TokenRecord, context_from_grant
from fhir_server.web.smart import s256
from tests import web_support
from tests.patient_support import build_world, screening_of
from tests.web_support import PASSWORD, hidden

web_server = web_support.web_server  # the module's live server fixture


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server)


def run(db, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fhir_server")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.auth_handler(args, db)


def test_users_add_patient(web_server, world, tmp_path):
    password = tmp_path / "pw"
    password.write_text("a long patient password\n")
    assert run(web_server.db, "users", "add", "--username", "marisol.cli", "--password-file",
               str(password), "--patient", world.patient_ref) == 0
    with web_server.db.read() as conn:
        user = get_user(conn, "marisol.cli")
    assert user.fhir_user == world.patient_ref and user.organization is None
    assert user.patient_id == world.patient and not user.is_admin
    with pytest.raises(ValueError, match="not stored"):
        run(web_server.db, "users", "add", "--username", "ghost", "--password-file",
            str(password), "--patient", "Patient/no-such-patient")
    with pytest.raises(ValueError, match="cannot be combined"):
        run(web_server.db, "users", "add", "--username", "mixed", "--password-file",
            str(password), "--patient", world.patient_ref, "--organization",
            "Organization/lakeside")
    with pytest.raises(ValueError, match="--practitioner and --organization"):
        run(web_server.db, "users", "add", "--username", "nobody", "--password-file",
            str(password))


def token_for(server, username: str, client_id: str, redirect: str, scope: str) -> dict:
    """Authorization code flow with PKCE for `username`, driven with requests."""
    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
              "scope": scope, "state": "s1", "aud": server.base,
              "code_challenge": s256(verifier), "code_challenge_method": "S256"}
    r = browser.get(f"{server.root}/auth/authorize?{urlencode(params)}",
                    allow_redirects=False, timeout=30)
    cont = r.headers["Location"]
    browser.post(f"{server.root}/auth/login", data={
        "username": username, "password": PASSWORD, "next": cont}, allow_redirects=False,
        timeout=30)
    approval = browser.get(server.root + cont, timeout=30).text
    assert 'name="patient"' not in approval  # no picker: a patient is always themselves
    r = browser.post(f"{server.root}/auth/approve", data={
        "rid": hidden(approval, "rid"), "csrf": hidden(approval, "csrf"),
        "decision": "approve"}, allow_redirects=False, timeout=30)
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    answer = requests.post(f"{server.root}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
        "code_verifier": verifier, "client_id": client_id}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_patient_never_gets_user_scopes(web_server, world):
    """Signing in to the care team's app (which asks for user/ scopes) as a patient gives
    a token without them: it can read nothing."""
    body = token_for(web_server, world.username, "mh-referral-app",
                     f"{web_server.root}/app/callback",
                     "launch/patient openid fhirUser user/Patient.rs user/Task.rs")
    assert "user/" not in body["scope"] and body["patient"] == world.patient
    auth = {"Authorization": f"Bearer {body['access_token']}",
            "Accept": "application/fhir+json"}
    for url in (f"Patient/{world.other_patient}", "Task", "Patient", "QuestionnaireResponse"):
        assert requests.get(f"{web_server.base}/{url}", headers=auth,
                            timeout=30).status_code == 403


def test_patient_scopes_are_bound_to_the_patients_own_record(web_server, world):
    body = token_for(web_server, world.username, "mh-referral-me",
                     f"{web_server.root}/me/callback",
                     "launch/patient openid fhirUser patient/Patient.rs patient/Task.rs")
    assert body["patient"] == world.patient and body["need_patient_banner"] is True
    auth = {"Authorization": f"Bearer {body['access_token']}",
            "Accept": "application/fhir+json"}
    assert requests.get(f"{web_server.base}/{world.patient_ref}", headers=auth,
                        timeout=30).status_code == 200
    assert requests.get(f"{web_server.base}/Patient/{world.other_patient}", headers=auth,
                        timeout=30).status_code == 404
    tasks = requests.get(f"{web_server.base}/Task", headers=auth, timeout=30).json()
    subjects = {e["resource"]["for"]["reference"] for e in tasks.get("entry", [])}
    assert subjects == {world.patient_ref}


def test_a_patient_cannot_launch_apps(web_server, world):
    browser = requests.Session()
    browser.post(f"{web_server.root}/auth/login", data={
        "username": world.username, "password": PASSWORD, "next": "/auth/login"},
        allow_redirects=False, timeout=30)
    r = browser.get(f"{web_server.root}/auth/launch?client_id=mh-referral-app&patient="
                    f"{world.other_patient}", allow_redirects=False, timeout=30)
    assert r.status_code == 403
    assert re.search("cannot launch", r.text)


def test_a_patient_token_is_bound_to_its_own_record_whatever_the_grant_says():
    grant = {"scope": "user/*.cruds system/*.cruds patient/*.rs openid", "user": "p",
             "fhir_user": "Patient/me", "organization": "Organization/x", "patient": "other",
             "is_admin": True}
    ctx = context_from_grant(TokenRecord("t", "access", "g", "c", grant, 0, 0))
    assert ctx.patient == "me" and ctx.organization is None and not ctx.is_admin
    assert {s.context for s in ctx.scopes.resource} == {"patient"}


def test_make_run_makes_the_example_patients_account(web_server, tmp_path):
    """`make run` (demo-clients) gives the example patient an account for /me."""
    from pathlib import Path

    from fhir_server.demo import setup_demo_users
    from fhir_server.loader import load_files

    examples = Path(__file__).resolve().parents[1] / "examples"
    load_files(web_server.settings, [examples / "referral-bundle-1.json"])
    lines = setup_demo_users(web_server.settings, tmp_path)
    assert "patient demo-patient: password in" in "\n".join(lines)
    with web_server.db.read() as conn:
        account = get_user(conn, "demo-patient")
    assert account.fhir_user.startswith("Patient/") and account.organization is None
    assert (tmp_path / "demo-patient.password").stat().st_mode & 0o077 == 0


def test_a_patient_changes_only_their_own_tasks(web_server, world):
    """With the patient pages' own scopes (patient/Task.rus ...), a patient may finish the
    Tasks their care team gave them, but may not move, cancel or annotate their referral
    (owned by the provider), nor write anything about another patient."""
    from fhir_server.web.patient import SCOPE

    body = token_for(web_server, world.username, "mh-referral-me",
                     f"{web_server.root}/me/callback", SCOPE)
    auth = {"Authorization": f"Bearer {body['access_token']}",
            "Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
    url = f"{web_server.base}/Task/{world.referral['task']['id']}"
    referral = requests.get(url, headers=auth, timeout=30).json()
    assert referral["status"] == "accepted"  # readable: it is about her
    for change in ({"owner": {"reference": "Organization/riverside-clinic"}},
                   {"status": "cancelled"},
                   {"output": [{"type": {"text": "answers"}, "valueReference": {
                       "reference": screening_of(web_server, world.patient)[0]}}]}):
        r = requests.put(url, json={**referral, **change}, headers={
            **auth, "If-Match": f'W/"{referral["meta"]["versionId"]}"'}, timeout=30)
        assert r.status_code in (403, 409, 422), (change, r.status_code, r.text[:500])
        assert r.json()["resourceType"] == "OperationOutcome"
    stored_now = world.provider.get(f"Task/{world.referral['task']['id']}").json()
    assert stored_now["meta"]["versionId"] == referral["meta"]["versionId"]

    other = f"Patient/{world.other_patient}"
    answers = {"resourceType": "QuestionnaireResponse", "status": "completed",
               "questionnaire": "http://mh-referral.example.org/fhir/Questionnaire/phq-9|1.0.0",
               "subject": {"reference": other}, "author": {"reference": other},
               "authored": "2026-12-05T10:00:00Z",
               "item": [{"linkId": "1", "answer": [{"valueCoding": {
                   "system": "http://loinc.org", "code": "LA6568-5"}}]}]}
    r = requests.post(f"{web_server.base}/QuestionnaireResponse", json=answers,
                      headers=auth, timeout=30)
    assert r.status_code in (403, 422), r.text[:500]
    assert requests.get(f"{web_server.base}/ServiceRequest", params={"subject": other},
                        headers=auth, timeout=30).json().get("entry") is None
