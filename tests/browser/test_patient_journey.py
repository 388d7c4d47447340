"""The patient's pages in a real browser on a phone-sized screen (390 x 844): the patient signs
in, sees the accepted referral in words with the provider's phone and address, switches to
Spanish, answers a follow-up PHQ-9 (item 9 positive: the crisis numbers come first, the
server scores the answers and asks the referring clinic for a same-day risk assessment),
stops sharing the answers with the provider (whose next read loses them), and sets reminder
choices. Every page: screenshot, axe-core (no serious or critical violation), no sideways
scrolling at 390 px. Another patient sees none of it."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.patient_support import build_world, follow_up_task, stored
from tests.web_support import sign_in_http


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server)


def test_patient_journey(phone_page, web_server, world, check):
    page = phone_page
    task = follow_up_task(world)
    sign_in(page, web_server, world.username, start="/me/login")
    page.wait_for_url(re.compile(r".*/me/$"))
    # Marisol prefers Spanish (her record's communication language): the pages start in it
    assert page.locator("html").get_attribute("lang") == "es"
    assert re.search(r"Lakeside Counseling aceptó su referido el \d+ de \w+ de \d{4}\. Le van "
                     r"a llamar\.", page.locator(".referral").first.inner_text())
    check(page, "1-home-es")
    page.click("text=English")
    card = page.locator(".referral").first
    assert re.search(r"Lakeside Counseling accepted your referral on \d+ \w+ \d{4}\. They will "
                     r"call you\.", card.inner_text())
    assert page.locator(".crisis-bar a[href='tel:988']").is_visible()
    assert page.locator("#patient-banner").inner_text().startswith("Your record: Marisol")
    assert card.locator("a[href^='tel:']").first.inner_text() == "617-555-0142"
    check(page, "2-home")

    page.click(f"a[href$='/me/tasks/{task['id']}']")
    assert page.locator("h1").inner_text() == "Questions about your mood (PHQ-9)"
    page.click("main button[type=submit]")  # nothing chosen: the browser asks for the first
    assert page.url.endswith(f"/me/tasks/{task['id']}")
    for n, choice in enumerate([1, 2, 1, 2, 1, 1, 0, 0, 2, 1], start=1):
        page.click(f"label[for='q{n}-{choice}']")
    check(page, "3-questions")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(rf".*/me/tasks/{task['id']}/done$"))
    alert = page.locator("#safety")
    assert alert.is_visible() and "Please reach out for help now" in alert.inner_text()
    assert page.locator("#safety a[href='tel:988']").is_visible()
    check(page, "4-answers-sent-crisis")

    answer = stored(web_server, "Task", [("_id", task["id"])])[0]
    response = answer["output"][0]["valueReference"]["reference"]
    total = stored(web_server, "Observation", [("derived-from", response),
                                               ("code", "http://loinc.org|44261-6")])
    assert total[0]["valueQuantity"]["value"] == 10
    risk = stored(web_server, "Task", [("patient", world.patient_ref),
                                       ("code", "http://snomed.info/sct|225337009")])
    assert risk[0]["owner"]["reference"] == world.doctor.organization
    # the care team's view of the follow-up: their Task, completed, names the answers
    care_team_task = world.clinic.get(f"Task/{task['id']}").json()
    assert care_team_task["status"] == "completed"
    assert care_team_task["output"][0]["valueReference"]["reference"] == response
    # ... and their app shows the score as the latest PHQ-9, with the safety banner
    summary = sign_in_http(web_server, world.doctor.username, "/app").get(
        f"{web_server.root}/app/patients/{world.patient}", timeout=60).text
    assert re.search(r'id="latest-phq-9">10<', summary), summary
    assert "Safety alert: possible risk of suicide or self-harm" in summary

    request = world.provider.get(
        f"ServiceRequest/{world.referral['service_request']['id']}").json()
    shared = [r["reference"] for r in request["supportingInfo"]
              if r["reference"].startswith("QuestionnaireResponse/")]
    assert all(world.provider.get(ref).status_code == 200 for ref in shared)
    page.click("nav[aria-label=Main] >> text=Sharing")
    assert "Sharing your answers" in page.locator(".share").first.inner_text()
    check(page, "5-sharing")
    page.click("text=Stop sharing my answers")
    check(page, "6-stop-sharing")
    page.click("main button[type=submit]")
    expect(page.locator(".alert")).to_contain_text("can no longer see your answers")
    assert all(world.provider.get(ref).status_code == 404 for ref in shared)
    check(page, "7-sharing-stopped")

    page.click("nav[aria-label=Main] >> text=Reminders")
    page.uncheck("#sms")
    page.click("main button[type=submit]")
    expect(page.locator(".alert-ok")).to_be_visible()  # waits for the post-redirect page
    check(page, "8-reminders")


def test_another_patient_sees_none_of_it(phone_page, web_server, world, check):
    page = phone_page
    sign_in(page, web_server, world.other_username, start="/me/login")
    page.wait_for_url(re.compile(r".*/me/$"))
    body = page.locator("main").inner_text()
    assert "Hola, Teodoro Quispe" in body and "Marisol" not in body
    page.goto(f"{web_server.root}/me/sharing/{world.referral['consent']['id']}/stop?lang=en")
    assert page.locator("h1").inner_text() == "Not found"
    assert "Marisol" not in page.locator("body").inner_text()
    check(page, "9-other-patient-not-found")
