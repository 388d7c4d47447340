"""The care team's app in a real browser: EHR launch from this server acting as the EHR →
summary with the PHQ-9 and the safety banner → recommendation → providers → send → the
provider accepts and completes through the API → the tracker shows accepted, then completed
with the outcome. Also: a double submit makes one referral, another clinic sees none of it,
every page passes axe-core and has no horizontal scroll at 390 px."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.web_support import PASSWORD

SDOHCC_CODES = ("http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/"
                "SDOHCC-CodeSystemTemporaryCodes")
KEY_SYSTEM = "urn:ietf:rfc:3986"


@pytest.fixture(scope="module")
def world(web_server):
    net = web_server.network
    net.organization("riverside", "Riverside Family Health Center")
    net.organization("hillside", "Hillside Clinic")
    net.organization("lakeside", "Lakeside Behavioral Health")
    net.service("lakeside-crisis", "lakeside", "Lakeside 24/7 crisis team", "crisis",
                "183866009", around_the_clock=True)
    net.service("lakeside-therapy", "lakeside", "Lakeside counseling", "therapy", "306226009")
    # An ordinary clinic user: the policy lets staff read their organization's patients
    # and what their organization wrote (the screening, its scores and safety Flag).
    doctor = net.staff("dr_okafor", "riverside", "Amara", "Okafor")
    net.staff("dr_hill", "hillside", "Sam", "Hill")
    clinic = net.client_for("riverside")
    patient = net.screened_patient(clinic, doctor, "Marisol", "Delgado",
                                   [2, 2, 2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 1, 1, 1, 1],
                                   earlier_phq9=[1, 1, 1, 1, 1, 1, 1, 0, 0])
    return {"patient": patient, "doctor": doctor, "provider": net.client_for("lakeside")}


def ehr_launch(page, web_server, patient: str) -> None:
    """This server as the EHR: the user signs in there and launches the app for a patient."""
    page.goto(f"{web_server.root}/auth/launch?client_id=mh-referral-app&patient={patient}")
    page.fill("#username", "dr_okafor")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.click("button[value=approve]")
    page.wait_for_url(re.compile(rf".*/app/patients/{patient}$"))


def provider_moves(provider, task_id: str, status: str, **extra) -> dict:
    task = provider.get(f"Task/{task_id}").json()
    task.update(status=status, **extra)
    return provider.put(f"Task/{task_id}", task, headers={
        "If-Match": f'W/"{task["meta"]["versionId"]}"'}).json()


def test_journey(browser_page, web_server, world, check):
    page, patient = browser_page, world["patient"]
    ehr_launch(page, web_server, patient)
    summary = page.locator("main")
    assert page.locator("h1").inner_text() == "Marisol Delgado"
    assert page.locator("#latest-phq-9").inner_text() == "18"
    banner = page.locator(".safety")
    assert banner.is_visible()
    text = banner.inner_text()
    assert "988" in text and "911" in text and "More than half the days" in text
    assert "due by" in text  # the open risk-assessment Task and its due time
    assert "Spanish" in summary.inner_text() and "MRN-" in summary.inner_text()
    assert page.locator("svg.chart").count() == 2
    check(page, "1-summary")

    page.click("text=Recommended care")
    assert "Safety pathway" in page.locator("#level").inner_text()
    expect(page.locator("#sign-off")).to_be_visible()
    check(page, "2-recommended-care")

    page.click("text=Find providers")
    matches = page.locator("#matches")
    assert "Lakeside 24/7 crisis team" in matches.inner_text()
    assert matches.locator(".reasons li").count() > 0
    check(page, "3-providers")

    page.click("text=Refer to Lakeside Behavioral Health")
    assert "PHQ-9 18" in page.locator("#reason").input_value()
    page.select_option("#priority", "routine")
    page.check("#consent")
    check(page, "4-send")
    page.click("button:has-text('Send referral')")
    page.wait_for_url(re.compile(r".*/app/referrals/[\w.-]+$"))
    assert page.locator("#stored-priority").inner_text() == "Urgent"
    assert "raised it to urgent" in page.locator("#raised").inner_text()
    assert "Urgent" in page.locator("#priority").inner_text()  # the Task, not only the request
    check(page, "5-sent")
    task_id = page.url.rsplit("/", 1)[1]

    provider = world["provider"]
    provider_moves(provider, task_id, "accepted")
    page.goto(f"{web_server.root}/app/referrals")
    row = page.locator(f"tr[data-task='{task_id}'] .status")
    assert "Accepted" in row.inner_text()
    check(page, "6-tracker-accepted")

    task = provider.get(f"Task/{task_id}").json()
    sr_ref = task["focus"]["reference"]
    provider_moves(provider, task_id, "in-progress")
    procedure = provider.post("Procedure", {
        "resourceType": "Procedure", "status": "completed", "subject": task["for"],
        "basedOn": [{"reference": sr_ref}], "performedDateTime": "2026-11-27",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "385893007",
                             "display": "Crisis intervention"}]},
        "note": [{"text": "Safety plan made; weekly therapy started."}]}).json()
    provider_moves(provider, task_id, "completed", output=[{
        "type": {"coding": [{"system": SDOHCC_CODES, "code": "resulting-activity"}]},
        "valueReference": {"reference": f"Procedure/{procedure['id']}"}}])
    # the open tracker refreshes itself (polling every 10 s) and shows the completion
    expect(page.locator(f"tr[data-task='{task_id}'] .status")).to_contain_text(
        "Completed", timeout=30_000)
    page.click(f"tr[data-task='{task_id}'] a")
    assert "Crisis intervention" in page.locator("#outcome").inner_text()
    assert "Safety plan made" in page.locator("#outcome").inner_text()
    timeline = page.locator("#timeline").inner_text()
    assert "Dr Amara Okafor" in timeline and "sent the referral" in timeline
    assert "Lakeside Behavioral Health accepted the referral" in timeline
    assert "completed the referral" in timeline
    check(page, "7-referral-completed")

    page.click("text=Needs attention")
    check(page, "8-needs-attention")


def test_double_submit_makes_one_referral(browser_page, web_server, world):
    page, patient = browser_page, world["patient"]
    sign_in(page, web_server, "dr_okafor")
    page.goto(f"{web_server.root}/app/patients/{patient}/send?service=lakeside-therapy")
    key = page.locator("input[name=idempotency_key]").input_value()
    page.evaluate("document.querySelector('form[data-once]').removeAttribute('data-once')")
    page.evaluate("""() => { const f = document.querySelector('main form');
        f.requestSubmit(); f.requestSubmit(); }""")
    page.wait_for_url(re.compile(r".*/app/referrals/[\w.-]+$"))
    page.go_back()
    page.click("button:has-text('Send referral')")  # the back button and send again
    page.wait_for_url(re.compile(r".*/app/referrals/[\w.-]+$"))
    provider = world["provider"]
    found = provider.get("Task", params={"identifier": f"{KEY_SYSTEM}|urn:uuid:{key}"}).json()
    assert len(found.get("entry", [])) == 1, found
    requests = provider.get("ServiceRequest", params={
        "identifier": f"{KEY_SYSTEM}|urn:uuid:{key}"}).json()
    assert len(requests.get("entry", [])) == 1


def test_another_clinic_sees_none_of_it(browser_page, web_server, world, check):
    page, patient = browser_page, world["patient"]
    sign_in(page, web_server, "dr_hill")
    page.goto(f"{web_server.root}/app/referrals")
    assert "No referral matches" in page.locator("main").inner_text()
    assert "Marisol" not in page.content()
    check(page, "9-other-clinic-tracker")
    page.goto(f"{web_server.root}/app/patients/{patient}")
    assert page.locator("h1").inner_text() == "Not found"
    assert "Marisol" not in page.content()
    page.goto(f"{web_server.root}/app/patients?q=Delgado")
    assert "No patient of your clinic matches" in page.locator("main").inner_text()
    page.goto(f"{web_server.root}/app/referrals/attention")
    assert "Marisol" not in page.content()


def test_landing_and_sign_in_pages(browser_page, web_server, check):
    page = browser_page
    page.goto(web_server.root + "/")
    check(page, "0-landing")
    page.goto(web_server.root + "/app/")
    check(page, "0-app-welcome")
