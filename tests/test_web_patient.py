"""The patient's pages over HTTP (no browser): sign-in binds the patient's own record, the
referral in words with the provider's contact details, a follow-up questionnaire answered
and scored, Tasks finished or declined, sharing withdrawn, reminder choices saved, English
and Spanish, and another patient sees none of it."""

from __future__ import annotations

import base64
import re

import pytest
import requests

from mappers.reminder_preferences import preferences
from tests import web_support
from tests.patient_support import (
    SDOHCC_CODES,
    TASK_FOR_PATIENT,
    build_world,
    follow_up_task,
    stored,
)
from tests.web_support import PASSWORD, hidden, sign_in_http

web_server = web_support.web_server  # the module's live server fixture


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server)


def page(session: requests.Session, url: str, status: int = 200) -> str:
    r = session.get(url, allow_redirects=False, timeout=30)
    assert r.status_code == status, (url, r.status_code, r.text[:2000])
    return r.text


def csrf_of(html: str) -> str:
    """The CSRF value of the page's own form (in <main>, not the header's sign-out form)."""
    return hidden(html.split("<main", 1)[1], "csrf")


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_home_shows_the_accepted_referral_in_words(web_server, world):
    me = sign_in_http(web_server, world.username, "/me")
    html = page(me, f"{web_server.root}/me/?lang=en")
    words = text_of(html)
    assert "Hello, Marisol Delgado" in words
    assert re.search(r"Lakeside Counseling accepted your referral on \d{1,2} \w+ \d{4}\. "
                     r"They will call you\.", words), words
    assert "617-555-0142" in words and "1 Main St" in words and "Boston, MA" in words
    assert "Mon, Tue, Wed, Thu, Fri: 09:00 to 17:00" in words
    assert "Your care team: Riverside Family Health Center" in words
    assert "988" in words and "911" in words
    assert "Your record: Marisol Delgado, born 14 June 1988" in words  # need_patient_banner
    assert "Teodoro" not in words and "Quispe" not in words


def test_spanish(web_server, world):
    me = sign_in_http(web_server, world.username, "/me")
    words = text_of(page(me, f"{web_server.root}/me/?lang=es"))
    assert re.search(r"Lakeside Counseling aceptó su referido el \d{1,2} de \w+ de \d{4}\.",
                     words), words
    assert "Llame o envíe un mensaje de texto al 988" in words
    assert '<html lang="es">' in page(me, f"{web_server.root}/me/")  # remembered
    task = follow_up_task(world)  # the questions themselves, from the Questionnaire
    form = text_of(page(me, f"{web_server.root}/me/tasks/{task['id']}"))
    assert "Preguntas sobre su estado de ánimo (PHQ-9)" in form
    assert "Durante las últimas 2 semanas" in form
    assert "Poco interés o placer en hacer cosas" in form and "Ningún día" in form
    assert "Little interest" not in form


def test_a_staff_account_is_turned_away(web_server, world):
    """Staff who sign in to the patient's pages (choosing a patient in the picker) get a
    page that sends them to their own app, not the patient's record."""
    browser = requests.Session()
    r = browser.get(f"{web_server.root}/me/login", allow_redirects=False, timeout=30)
    r = browser.get(r.headers["Location"], allow_redirects=False, timeout=30)
    cont = web_server.root + r.headers["Location"]
    browser.post(f"{web_server.root}/auth/login", data={
        "username": world.doctor.username, "password": PASSWORD,
        "next": r.headers["Location"]}, allow_redirects=False, timeout=30)
    picker = browser.get(cont + "&q=Delgado", timeout=30).text
    assert world.patient in picker
    r = browser.post(f"{web_server.root}/auth/approve", data={
        "rid": hidden(picker, "rid"), "csrf": hidden(picker, "csrf"), "q": "Delgado",
        "patient": world.patient, "decision": "approve"}, allow_redirects=False, timeout=30)
    browser.get(r.headers["Location"], allow_redirects=False, timeout=30)
    html = page(browser, f"{web_server.root}/me/", 403)
    assert "This page is for patients" in html and "Marisol" not in html


def answer_form(html: str, choices: list[int | None]) -> dict[str, str]:
    """Form data choosing answer `choices[n]` for the n-th question (None: unanswered)."""
    data = {"csrf": csrf_of(html), "idempotency_key": hidden(html, "idempotency_key"),
            "version": hidden(html, "version")}
    fields = list(dict.fromkeys(re.findall(r'type="radio" id="[^"]+" name="(q\d+)"', html)))
    for field, choice in zip(fields, choices, strict=False):
        if choice is not None:
            data[field] = str(choice)
    return data


def test_follow_up_phq9_answered_scored_and_safety_shown(web_server, world):
    task = follow_up_task(world)
    me = sign_in_http(web_server, world.username, "/me")
    home = page(me, f"{web_server.root}/me/?lang=en")
    assert f"/me/tasks/{task['id']}" in home and "Questions about your mood (PHQ-9)" in home
    form = page(me, f"{web_server.root}/me/tasks/{task['id']}")
    assert form.count('type="radio"') == 10 * 4  # nine items and the difficulty question
    assert "Little interest or pleasure in doing things" in form
    assert "Over the last 2 weeks" in form

    missing = me.post(f"{web_server.root}/me/tasks/{task['id']}",
                      data=answer_form(form, [1, 1, 1]), allow_redirects=False, timeout=30)
    assert missing.status_code == 400 and "Please answer this question." in missing.text
    assert 'aria-invalid' not in missing.text or 'q4-error' in missing.text

    data = answer_form(form, [1, 2, 1, 2, 1, 1, 0, 0, 1, 1])  # item 9: several days
    sent = me.post(f"{web_server.root}/me/tasks/{task['id']}", data=data,
                   allow_redirects=False, timeout=30)
    assert sent.status_code == 303, sent.text[:3000]
    again = me.post(f"{web_server.root}/me/tasks/{task['id']}", data=data,
                    allow_redirects=False, timeout=30)  # a double submit
    assert again.status_code == 303
    done = text_of(page(me, web_server.root + sent.headers["Location"]))
    assert "Please reach out for help now" in done and "Call 988" in done

    done_task = world.clinic.get(f"Task/{task['id']}").json()  # the care team's Task
    assert done_task["status"] == "completed"
    response_ref = done_task["output"][0]["valueReference"]["reference"]
    responses = stored(web_server, "QuestionnaireResponse", [
        ("subject", world.patient_ref), ("author", world.patient_ref)])
    assert [f"QuestionnaireResponse/{r['id']}" for r in responses] == [response_ref]
    assert responses[0]["basedOn"] == task["basedOn"]
    total = stored(web_server, "Observation", [("derived-from", response_ref),
                                               ("code", "http://loinc.org|44261-6")])
    assert total[0]["valueQuantity"]["value"] == 9  # scored by the server as usual
    flags = stored(web_server, "Flag", [("patient", world.patient_ref)])
    assert any("item 9" in (f["code"].get("text") or "") for f in flags)
    risk = stored(web_server, "Task", [("patient", world.patient_ref),
                                       ("code", "http://snomed.info/sct|225337009")])
    assert risk and risk[0]["status"] == "requested"
    # the referring clinic must assess the risk: the response is based on its referral,
    # and the clinic sees the request for a same-day assessment, the Flag it focuses on
    # (rule 14, auth/README.md) and the safety banner in its app
    assert risk[0]["owner"]["reference"] == world.doctor.organization
    assert world.clinic.get(f"Task/{risk[0]['id']}").status_code == 200
    flag = risk[0]["focus"]["reference"]
    assert world.clinic.get(flag).status_code == 200
    assert world.provider.get(flag).status_code == 404  # the provider did not ask
    doctor = sign_in_http(web_server, world.doctor.username, "/app")
    summary = text_of(page(doctor, f"{web_server.root}/app/patients/{world.patient}"))
    assert "Safety alert: possible risk of suicide or self-harm" in summary
    assert "A same-day suicide risk assessment is open (requested)" in summary


def test_the_care_team_reads_the_follow_up_score(web_server, world):
    """The clinic that sent the follow-up questions sees the answers and their score."""
    task = follow_up_task(world)
    me = sign_in_http(web_server, world.username, "/me")
    form = page(me, f"{web_server.root}/me/tasks/{task['id']}")
    sent = me.post(f"{web_server.root}/me/tasks/{task['id']}", data=answer_form(
        form, [1, 1, 1, 1, 1, 1, 1, 1, 0, 0]), allow_redirects=False, timeout=30)
    assert sent.status_code == 303
    done = world.clinic.get(f"Task/{task['id']}").json()
    response_ref = done["output"][0]["valueReference"]["reference"]
    assert world.clinic.get(response_ref).status_code == 200
    total = world.clinic.get("Observation", params={
        "derived-from": response_ref, "code": "http://loinc.org|44261-6"}).json()
    assert total["entry"][0]["resource"]["valueQuantity"]["value"] == 8
    # the care team's app shows it as the latest PHQ-9 (rules 12 and 13, auth/README.md)
    doctor = sign_in_http(web_server, world.doctor.username, "/app")
    summary = page(doctor, f"{web_server.root}/app/patients/{world.patient}")
    assert re.search(r'id="latest-phq-9">8<', summary), summary
    # the provider the patient was referred to did not ask: it sees neither
    assert world.provider.get(response_ref).status_code == 404
    assert world.provider.get("Observation", params={
        "derived-from": response_ref}).json().get("entry") is None


def test_withdrawing_consent_hides_the_answers_from_the_provider_at_once(web_server, world):
    request = world.provider.get(
        f"ServiceRequest/{world.referral['service_request']['id']}").json()
    answers = [r["reference"] for r in request["supportingInfo"]
               if r["reference"].startswith("QuestionnaireResponse/")]
    assert answers and all(world.provider.get(a).status_code == 200 for a in answers)

    me = sign_in_http(web_server, world.username, "/me")
    sharing = text_of(page(me, f"{web_server.root}/me/sharing?lang=en"))
    assert "Lakeside Behavioral Health" in sharing and "Sharing your answers" in sharing
    assert "Your answers to the PHQ-9 from" in sharing
    consent_id = world.referral["consent"]["id"]
    confirm = page(me, f"{web_server.root}/me/sharing/{consent_id}/stop")
    assert "Stop sharing your answers with Lakeside Behavioral Health?" in text_of(confirm)
    r = me.post(f"{web_server.root}/me/sharing/{consent_id}/stop", data={
        "csrf": csrf_of(confirm), "version": hidden(confirm, "version")},
        allow_redirects=False, timeout=30)
    assert r.status_code == 303
    after = text_of(page(me, f"{web_server.root}/me/sharing"))
    assert "The provider can no longer see your answers" in after
    assert "Not sharing your answers" in after

    assert world.provider.get(f"Consent/{consent_id}").json()["status"] == "inactive"
    for ref in answers:  # the provider's next read
        assert world.provider.get(ref).status_code == 404
    assert world.provider.get(f"ServiceRequest/{request['id']}").status_code == 200
    assert world.provider.get(world.patient_ref).status_code == 200  # can still call

    again = page(me, f"{web_server.root}/me/sharing/{consent_id}/start")
    r = me.post(f"{web_server.root}/me/sharing/{consent_id}/start", data={
        "csrf": csrf_of(again), "version": hidden(again, "version")},
        allow_redirects=False, timeout=30)
    assert r.status_code == 303
    assert all(world.provider.get(a).status_code == 200 for a in answers)


def test_another_patient_sees_none_of_it(web_server, world):
    task = follow_up_task(world)
    other = sign_in_http(web_server, world.other_username, "/me")
    home = text_of(page(other, f"{web_server.root}/me/?lang=en"))
    assert "Hello, Teodoro Quispe" in home and "Marisol" not in home
    assert task["id"] not in page(other, f"{web_server.root}/me/")
    for url in (f"/me/tasks/{task['id']}", f"/me/tasks/{task['id']}/decline",
                f"/me/sharing/{world.referral['consent']['id']}/stop"):
        assert "Marisol" not in page(other, web_server.root + url, 404)
    sharing = text_of(page(other, f"{web_server.root}/me/sharing"))
    assert "PHQ-9 from 20 November 2026" in sharing  # Teodoro's own screening
    assert world.referral["consent"]["id"] not in sharing


def patient_task(world, code: str, **fields) -> dict:
    patient = world.patient_ref
    task = {"resourceType": "Task", "meta": {"profile": [TASK_FOR_PATIENT]},
            "status": "ready", "intent": "order", "priority": "routine",
            "code": {"coding": [{"system": SDOHCC_CODES, "code": code}]},
            "for": {"reference": patient}, "owner": {"reference": patient},
            "authoredOn": "2026-12-02T10:00:00Z", "requester": {"reference": world.doctor.role},
            **fields}
    return world.clinic.post("Task", task).json()


def test_make_contact_then_done(web_server, world):
    task = patient_task(world, "make-contact", description="Call Lakeside to book a visit.",
                        input=[{"type": {"coding": [{"system": SDOHCC_CODES,
                                                     "code": "contact-entity"}]},
                                "valueReference": {"reference":
                                                   "HealthcareService/lakeside-counseling"}}])
    me = sign_in_http(web_server, world.username, "/me")
    html = page(me, f"{web_server.root}/me/tasks/{task['id']}?lang=en")
    words = text_of(html)
    assert "Get in touch with a provider" in words and "Call Lakeside to book a visit." in words
    assert "617-555-0142" in words and "I got in touch with them" in words
    r = me.post(f"{web_server.root}/me/tasks/{task['id']}", data={
        "csrf": csrf_of(html), "version": hidden(html, "version")}, allow_redirects=False,
        timeout=30)
    assert r.status_code == 303
    done = world.clinic.get(f"Task/{task['id']}").json()
    assert done["status"] == "completed"
    assert done["output"][0]["valueReference"]["reference"] == \
        "HealthcareService/lakeside-counseling"
    assert done["output"][0]["type"]["coding"][0]["code"] == "chosen-contact"


def test_review_material_and_decline(web_server, world):
    text = "What to expect at your first visit.\n\nBring a list of your medicines."
    document = world.clinic.post("DocumentReference", {
        "resourceType": "DocumentReference", "status": "current",
        "subject": {"reference": world.patient_ref},
        "description": "First visit",
        "content": [{"attachment": {"contentType": "text/plain; charset=utf-8",
                                    "title": "Your first visit",
                                    "data": base64.b64encode(text.encode()).decode()}}]}).json()
    read = patient_task(world, "review-material", description="Please read this.",
                        focus={"reference": f"DocumentReference/{document['id']}"})
    me = sign_in_http(web_server, world.username, "/me")
    html = page(me, f"{web_server.root}/me/tasks/{read['id']}?lang=en")
    assert "Your first visit" in html and "Bring a list of your medicines." in html
    r = me.post(f"{web_server.root}/me/tasks/{read['id']}", data={
        "csrf": csrf_of(html), "version": hidden(html, "version")}, allow_redirects=False,
        timeout=30)
    assert r.status_code == 303
    assert world.clinic.get(f"Task/{read['id']}").json()["status"] == "completed"

    no = patient_task(world, "general-information", description="Join our group session.")
    form = page(me, f"{web_server.root}/me/tasks/{no['id']}/decline")
    r = me.post(f"{web_server.root}/me/tasks/{no['id']}/decline", data={
        "csrf": csrf_of(form), "version": hidden(form, "version"),
        "reason": "I work on Tuesdays."}, allow_redirects=False, timeout=30)
    assert r.status_code == 303
    declined = world.clinic.get(f"Task/{no['id']}").json()
    assert declined["status"] == "rejected"
    assert declined["statusReason"]["text"] == "I work on Tuesdays."
    assert "We told your care team that you said no." in page(
        me, web_server.root + r.headers["Location"])


def test_reminder_choices_are_saved_on_the_patients_record(web_server, world):
    me = sign_in_http(web_server, world.username, "/me")
    html = page(me, f"{web_server.root}/me/reminders?lang=en")
    assert "marisol@example.org" in html and "+1 617 555 0100" in html
    r = me.post(f"{web_server.root}/me/reminders", data={
        "csrf": csrf_of(html), "email": "yes", "language": "es"}, timeout=30)
    assert r.status_code == 200 and "Your choices are saved." in r.text
    prefs = preferences(stored(web_server, "Patient", [("_id", world.patient)])[0])
    assert prefs.wants("email") and not prefs.wants("sms") and prefs.language == "es"
    html = page(me, f"{web_server.root}/me/reminders?lang=en")
    r = me.post(f"{web_server.root}/me/reminders", data={
        "csrf": csrf_of(html), "email": "yes", "sms": "yes", "language": "es"}, timeout=30)
    prefs = preferences(stored(web_server, "Patient", [("_id", world.patient)])[0])
    assert prefs.wants("sms") and prefs.opted_out == frozenset()
