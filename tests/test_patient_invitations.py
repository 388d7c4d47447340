"""Invitations: `users invite --patient` e-mails a one-time link (to a real SMTP server on
loopback) in the patient's language with nothing about their health; the link's page asks
for the date of birth on the record (five wrong tries lock it), makes the patient account,
signs the patient in and opens their pages; the link works once."""

from __future__ import annotations

import argparse
import re

import pytest
import requests

from fhir_server.auth.cli import register_cli
from fhir_server.auth.registry import get_user
from subscriptions.testing import smtp_receiver
from tests import web_support
from tests.patient_support import build_world

web_server = web_support.web_server  # the module's live server fixture


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server)


@pytest.fixture(scope="module")
def mail():
    controller, messages = smtp_receiver()
    yield controller, messages
    controller.stop()


def invite(web_server, mail, monkeypatch, patient: str, *extra: str) -> str:
    """Run `users invite` and return the link from the e-mail it sent."""
    controller, messages = mail
    monkeypatch.setenv("FHIR_SERVER_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("FHIR_SERVER_SMTP_PORT", str(controller.port))
    parser = argparse.ArgumentParser(prog="fhir_server")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["users", "invite", "--patient", patient, "--link-base",
                              web_server.root, *extra])
    before = len(messages)
    assert args.auth_handler(args, web_server.db) == 0
    assert len(messages) == before + 1
    body = messages[-1].get_payload(decode=True).decode()
    return re.search(r"https?://\S+", body).group(0)


def test_invitation_email_has_only_the_link(web_server, world, mail, monkeypatch):
    link = invite(web_server, mail, monkeypatch, world.patient_ref)
    message = mail[1][-1]
    body = message.get_payload(decode=True).decode()
    assert message["To"] == "marisol@example.org"
    assert message["Content-Language"] == "es" and "Cree su cuenta" in body
    assert link.startswith(f"{web_server.root}/auth/join?code=")
    assert re.findall(r"https?://\S+", body) == [link]
    for private in ("Marisol", "Delgado", "1988", "Lakeside", "Riverside", "PHQ", "referral",
                    "referido", world.patient):
        assert private.lower() not in body.lower()


def test_join_with_birth_date_then_signed_in(web_server, world, mail, monkeypatch):
    link = invite(web_server, mail, monkeypatch, world.patient_ref)
    code = link.split("code=")[1]
    browser = requests.Session()
    form = browser.get(link, timeout=30)
    assert form.status_code == 200 and '<html lang="es">' in form.text
    assert 'autocomplete="bday"' in form.text
    join = f"{web_server.root}/auth/join"
    data = {"code": code, "birth_date": "1988-06-15", "username": "marisol.join",
            "password": "a good long password", "password2": "a good long password"}
    wrong = browser.post(join, data=data, timeout=30)
    assert wrong.status_code == 400 and "no coincide" in wrong.text
    data["birth_date"] = "1988-06-14"
    mismatch = browser.post(join, data={**data, "password2": "something else"}, timeout=30)
    assert mismatch.status_code == 400 and "no son iguales" in mismatch.text
    taken = browser.post(join, data={**data, "username": world.doctor.username}, timeout=30)
    assert taken.status_code == 400 and "ya existe" in taken.text
    with web_server.db.read() as conn:
        assert get_user(conn, world.doctor.username).fhir_user.startswith("Practitioner/")

    done = browser.post(join, data=data, allow_redirects=False, timeout=30)
    assert done.status_code == 303 and done.headers["Location"] == "/me/login?lang=es"
    with web_server.db.read() as conn:
        account = get_user(conn, "marisol.join")
    assert account.fhir_user == world.patient_ref and account.organization is None
    # signed in at the authorization server: no password asked, straight to approval
    r = browser.get(web_server.root + done.headers["Location"], allow_redirects=False,
                    timeout=30)
    r = browser.get(r.headers["Location"], allow_redirects=False, timeout=30)
    approval = browser.get(web_server.root + r.headers["Location"], timeout=30).text
    assert 'name="password"' not in approval
    r = browser.post(f"{web_server.root}/auth/approve", data={
        "rid": web_support.hidden(approval, "rid"), "csrf": web_support.hidden(approval, "csrf"),
        "decision": "approve"}, allow_redirects=False, timeout=30)
    browser.get(r.headers["Location"], allow_redirects=False, timeout=30)
    home = browser.get(f"{web_server.root}/me/", timeout=30).text
    assert "Hola, Marisol Delgado" in home

    again = requests.post(join, data={**data, "username": "someone.else"}, timeout=30)
    assert again.status_code == 404 and "ya no funciona" in again.text  # used once


def test_five_wrong_birth_dates_lock_the_link(web_server, world, mail, monkeypatch):
    link = invite(web_server, mail, monkeypatch, f"Patient/{world.other_patient}")
    code = link.split("code=")[1]
    join = f"{web_server.root}/auth/join"
    data = {"code": code, "birth_date": "2000-01-01", "username": "teo.join",
            "password": "a good long password", "password2": "a good long password"}
    for _ in range(5):
        assert requests.post(join, data=data, timeout=30).status_code == 400
    data["birth_date"] = "1988-06-14"
    assert requests.post(join, data=data, timeout=30).status_code == 404
    assert requests.get(link, timeout=30).status_code == 404
    with web_server.db.read() as conn:
        assert get_user(conn, "teo.join") is None


def test_no_invitation_without_an_email_address(web_server, world, monkeypatch, mail):
    from fhir_server.auth.invitations import InvitationError, create_invitation

    patient = web_server.network.screened_patient(world.clinic, world.doctor, "Sin", "Correo",
                                                  [0, 0, 0, 0, 0, 0, 0, 0, 0])
    with pytest.raises(InvitationError, match="no e-mail address"):
        create_invitation(web_server.db, f"Patient/{patient}")
    with pytest.raises(InvitationError, match="not stored"):
        create_invitation(web_server.db, "Patient/nobody")
