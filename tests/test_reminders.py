"""Patient reminders end to end: a referral accepted and a Task for the patient queue a
reminder in the same write; the worker's pass sends it to a real SMTP server (aiosmtpd) and
to a fake SMS gateway on loopback (the HTTP API our gateway implementation speaks), in the
patient's language, with nothing but a sign-in link; quiet hours defer it, an opt-out is
honoured, a Task done before its day is not reminded, a failing gateway is retried without
sending the e-mail twice, and no patient receives another's reminder."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from email.header import decode_header, make_header

import pytest

from fhir_server.config import Settings
from fhir_server.interactions import crud
from fhir_server.reminders.gateway import HttpSmsGateway, SmsError, gateway_from, phone_number
from fhir_server.reminders.quiet import QuietHours
from fhir_server.reminders.sender import ReminderSender, backoff
from fhir_server.storage.reminders_store import reminders_of
from mappers.reminder_preferences import with_preferences
from subscriptions.channels import SmtpSettings
from subscriptions.testing import HookReceiver, smtp_receiver
from tests import web_support
from tests.patient_support import build_world, follow_up_task, move

web_server = web_support.web_server  # the module's live server fixture
TOKEN = "test-gateway-credential"
LINK = "https://care.example.org/me/"


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server)


@pytest.fixture(scope="module")
def sms(web_server):  # one per database: each run counts its own messages
    gateway = HookReceiver()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def mail(web_server):
    controller, messages = smtp_receiver()
    yield controller, messages
    controller.stop()


@pytest.fixture
def sender(web_server, sms, mail, tmp_path):
    token = tmp_path / "sms-token"
    token.write_text(TOKEN + "\n")
    settings = dataclasses.replace(
        web_server.settings, sms_url=sms.url, sms_token_file=str(token),
        sms_sender="+15550001111", reminder_link=LINK, reminder_quiet_hours="21:00-08:00",
        reminder_timezone="America/New_York")
    controller, _ = mail
    return ReminderSender.from_settings(web_server.db, settings, SmtpSettings(
        host="127.0.0.1", port=controller.port, sender="reminders@care.example.org"))


@pytest.fixture
def settled(sender):
    """The sender, after sending what earlier tests left due: each test counts only its own
    messages, whichever tests ran before it on this worker (pytest -n splits the module)."""
    sender.run_once(at(16, days=30))
    return sender


def at(hour_utc: int, days: int = 1) -> datetime:
    """A moment `days` from now at `hour_utc`:00 UTC (16 = 11:00 in New York)."""
    return (datetime.now(UTC) + timedelta(days=days)).replace(hour=hour_utc, minute=0,
                                                              second=0, microsecond=0)


def reminders(web_server, patient: str) -> list:
    with web_server.db.read() as conn:
        return reminders_of(conn, patient)


def private_words(world) -> list[str]:
    """What no reminder may carry: names, birth date, addresses, provider, clinic, health."""
    return ["Marisol", "Delgado", "Teodoro", "Quispe", "1988", "Lakeside", "Riverside",
            "Counseling", "PHQ", "depress", "mental", "marisol@", "teo@", "0100", "0199",
            world.patient, world.other_patient]


def sent_texts(sms, mail) -> list[tuple[str, str]]:
    """(recipient, text) of every text message and e-mail received so far."""
    out = [(r.body["to"], r.body["text"]) for r in sms.received]
    out += [(m["To"], m.get_payload(decode=True).decode()) for m in mail[1]]
    return out


def test_referral_accepted_reaches_email_and_sms_with_only_the_link(
        web_server, world, sender, sms, mail):
    queued = reminders(web_server, world.patient_ref)
    assert [(r.reason, r.subject, r.status) for r in queued] == [
        ("referral-accepted", f"Task/{world.referral['task']['id']}", "pending")]
    assert reminders(web_server, f"Patient/{world.other_patient}") == []  # not accepted

    outcome = sender.run_once(at(16))
    assert (outcome.sent, outcome.failed) == (1, 0)
    assert [r.body["to"] for r in sms.received] == ["+16175550100"]
    request = sms.received[0]
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.body["from"] == "+15550001111"
    # Marisol prefers Spanish: the message is in Spanish, and only the link is in it
    assert request.body["text"] == ("Hay novedades sobre su atención. Entre para ver más: "
                                    f"{LINK}")
    email = mail[1][0]
    assert email["To"] == "marisol@example.org" and email["Content-Language"] == "es"
    assert str(make_header(decode_header(email["Subject"]))) == "Un mensaje sobre su atención"
    for _recipient, text in sent_texts(sms, mail):
        assert re.findall(r"https?://\S+", text) == [LINK]
        assert [w for w in private_words(world) if w.lower() in text.lower()] == []
    assert reminders(web_server, world.patient_ref)[0].status == "sent"
    assert reminders(web_server, world.patient_ref)[0].channels == {"email", "sms"}

    assert sender.run_once(at(17)).sent == 0  # never twice
    assert len(sms.received) == 1 and len(mail[1]) == 1


def test_quiet_hours_defer_a_due_task_to_the_morning(web_server, world, settled, sms, mail):
    task = follow_up_task(world)
    before = len(sms.received), len(mail[1])
    night = at(3)  # 22:00 in New York
    assert settled.run_once(night).deferred == 1
    assert (len(sms.received), len(mail[1])) == before
    row = next(r for r in reminders(web_server, world.patient_ref)
               if r.subject == f"Task/{task['id']}")
    morning = datetime.fromtimestamp(row.due, UTC).astimezone(QuietHours.parse(
        "21:00-08:00", "America/New_York").zone)
    assert (morning.hour, morning.minute) == (8, 0) and row.note == "quiet hours"
    assert settled.run_once(datetime.fromtimestamp(row.due, UTC)).sent == 1
    assert sms.received[-1].body["text"] == ("Tiene algo que hacer para su atención. Entre "
                                             f"para ver más: {LINK}")
    assert len(mail[1]) == before[1] + 1


def test_opt_out_is_honoured(web_server, world, settled, sms, mail):
    call = web_server.network.call
    patient = crud.read(call, "Patient", world.patient).stored.resource()
    crud.update(call, "Patient", world.patient, with_preferences(patient, {"sms"}))
    before = len(sms.received), len(mail[1])
    follow_up_task(world)
    assert settled.run_once(at(16)).sent == 1
    assert len(sms.received) == before[0] and len(mail[1]) == before[1] + 1
    patient = crud.read(call, "Patient", world.patient).stored.resource()
    crud.update(call, "Patient", world.patient, with_preferences(patient, {"sms", "email"}))
    follow_up_task(world)
    assert settled.run_once(at(16)).skipped == 1
    assert (len(sms.received), len(mail[1])) == (before[0], before[1] + 1)
    patient = crud.read(call, "Patient", world.patient).stored.resource()
    crud.update(call, "Patient", world.patient, with_preferences(patient, set()))


def test_a_task_done_before_its_day_is_not_reminded(web_server, world, settled, sms, mail):
    later = (datetime.now(UTC) + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    task = follow_up_task(world, restriction={"period": {"start": later}})
    before = len(sms.received), len(mail[1])
    assert settled.run_once(at(16)).sent == 0  # not due yet
    move(world.clinic, task["id"], "cancelled")
    row = next(r for r in reminders(web_server, world.patient_ref)
               if r.subject == f"Task/{task['id']}")
    assert row.status == "skipped" and "cancelled" in row.note
    assert settled.run_once(at(16, days=11)).sent == 0
    assert (len(sms.received), len(mail[1])) == before


def test_a_failing_gateway_is_retried_without_a_second_email(web_server, world, settled, sms,
                                                             mail):
    task = follow_up_task(world)
    before = len(sms.received), len(mail[1])
    sms.status = 503
    try:
        outcome = settled.run_once(at(16))
    finally:
        sms.status = 200
    assert outcome.deferred == 1 and "HTTP 503" in outcome.notes[0]
    row = next(r for r in reminders(web_server, world.patient_ref)
               if r.subject == f"Task/{task['id']}")
    assert row.status == "pending" and row.attempts == 1 and row.channels == {"email"}
    assert settled.run_once(at(16) + backoff(1)).sent == 1
    assert len(sms.received) == before[0] + 1 and len(mail[1]) == before[1] + 1


def test_each_patient_gets_only_their_own(web_server, world, settled, sms, mail):
    referral = web_server.network.refer(world.clinic, world.doctor, world.other_patient,
                                        "lakeside-counseling", [])
    move(world.provider, referral["task"]["id"], "accepted")
    before = len(sms.received), len(mail[1])
    assert settled.run_once(at(16)).sent == 1
    assert [r.body["to"] for r in sms.received[before[0]:]] == ["+16175550199"]
    assert [m["To"] for m in mail[1][before[1]:]] == ["teo@example.org"]
    recipients = {to for to, _ in sent_texts(sms, mail)}
    assert recipients <= {"+16175550100", "marisol@example.org", "+16175550199",
                          "teo@example.org"}


def test_gateway_configuration_and_answers(tmp_path, sms):
    assert phone_number("+1 (617) 555-0100") == "+16175550100"
    settings = Settings(sms_url=sms.url)
    with pytest.raises(ValueError, match="FHIR_SERVER_SMS_TOKEN_FILE"):
        gateway_from(settings)
    gateway = HttpSmsGateway(sms.url, TOKEN)
    sms.status = 400
    try:
        with pytest.raises(SmsError) as refused:
            gateway.send("+1 617 555 0100", "x")
    finally:
        sms.status = 200
    assert refused.value.retry is False
    with pytest.raises(SmsError) as down:
        HttpSmsGateway("http://127.0.0.1:9/none", TOKEN, timeout=2).send("+1", "x")
    assert down.value.retry is True
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        QuietHours.parse("late", "UTC")
