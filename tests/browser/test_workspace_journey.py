"""The provider workspace in a real browser: a provider's intake worker signs in, finds the
new urgent referral at the top of the queue, accepts, starts and completes it with an
outcome, and the referring clinic's tracker shows it completed with that outcome. Also:
redirect through $match, a decline needs a reason, an open referral offered to two
organizations (one accepts, the other sees it withdrawn), a stale page, another
organization sees nothing; capacity, numbers and notifications pages. Every page: axe-core,
no horizontal scroll at 390 px, screenshots."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import sign_in
from tests.workspace_support import CRISIS, build_world, send_referral

START = "/workspace/login"


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server.network)


def new_page(chromium):
    """A second signed-out browser (another person at another desk)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.console_errors = []
    page.on("console", lambda m: page.console_errors.append(m.text)
            if m.type == "error" else None)
    return page


def open_referral(page, web_server, task_id: str) -> None:
    page.goto(f"{web_server.root}/workspace/referrals/{task_id}")


def test_journey(browser_page, web_server, world, check):
    page = browser_page
    page.goto(f"{web_server.root}/workspace/")
    check(page, "00-welcome")
    send_referral(world, world.other_patient, owner=world.lakeside.organization)
    task = send_referral(world, world.patient, owner=world.lakeside.organization,
                         priority="urgent", service=CRISIS,
                         reason="PHQ-9 18 with thoughts of self-harm several days; "
                                "safety plan made today, please see this week.")
    sign_in(page, web_server, world.lakeside.username, start=START)
    page.wait_for_url(re.compile(r".*/workspace/$"))
    first = page.locator("section[aria-labelledby=urgent-h] tr.work-row").first
    expect(first).to_have_attribute("data-task", task["id"])
    assert "Marisol Delgado" in first.inner_text() and "accept in" in first.inner_text()
    assert "Riverside Family Health Center (Dr Amara Okafor)" in first.inner_text()
    check(page, "01-queue")

    first.locator("a").click()
    page.wait_for_url(re.compile(rf".*/workspace/referrals/{task['id']}$"))
    assert "safety plan made today" in page.locator("#reason").inner_text()
    assert "PHQ-9" in page.locator("#screening").inner_text()
    assert "Spanish" in page.locator("#patient").inner_text()
    check(page, "02-referral-new")

    page.click("#action-accept button")
    expect(page.locator("#notice")).to_contain_text("Accepted")
    expect(page.locator("#status")).to_contain_text("Accepted")
    page.click("#action-start button")
    expect(page.locator("#status")).to_contain_text("In care")
    page.click("#action-complete summary")
    page.select_option("#complete_code", "225337009")
    page.fill("#complete_note", "Safety plan reviewed; weekly therapy booked.")
    check(page, "03-complete-form")
    page.click("#action-complete button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("Completed")
    expect(page.locator("#outcome")).to_contain_text("Suicide risk assessment")
    timeline = page.locator("#timeline").inner_text()
    assert "accepted the referral" in timeline and "completed the referral" in timeline
    check(page, "04-referral-completed")

    clinic = new_page(browser_page.context.browser)
    sign_in(clinic, web_server, world.doctor.username, start="/app/login")
    clinic.goto(f"{web_server.root}/app/referrals")
    row = clinic.locator(f"tr[data-task='{task['id']}']")
    expect(row.locator(".status")).to_contain_text("Completed")
    row.locator("a").click()
    outcome = clinic.locator("#outcome").inner_text()
    assert "Suicide risk assessment" in outcome and "weekly therapy booked" in outcome
    check(clinic, "05-clinic-sees-the-outcome")
    clinic.context.close()


def test_redirect_through_match(browser_page, web_server, world, check):
    page = browser_page
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    sign_in(page, web_server, world.lakeside.username, start=START)
    open_referral(page, web_server, task["id"])
    page.click("#redirect")
    expect(page.locator("h1")).to_have_text("Redirect to another provider")
    assert "Lakeside" not in page.locator("#redirect_service").inner_text()  # not to us
    check(page, "06-redirect-choices")
    page.fill("#redirect_reason", "Hillside has Spanish-speaking therapists this month.")
    page.click("button:has-text('Redirect')")  # no provider chosen
    expect(page.locator("#redirect_service .field-error")).to_be_visible()
    page.check("input[value='hillside-therapy']")
    page.click("button:has-text('Redirect')")
    expect(page.locator("#notice")).to_contain_text("Redirected")
    expect(page.locator("#status")).to_contain_text("Declined")
    stored = world.clinic.get(f"Task/{task['id']}").json()
    assert stored["status"] == "rejected"
    successor = world.clinic.get("Task", params={"owner": "HealthcareService/hillside-therapy",
                                                 "status": "requested"}).json()
    assert successor.get("entry"), "the new provider has the referral"


def test_decline_needs_a_reason(browser_page, web_server, world, check):
    page = browser_page
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    sign_in(page, web_server, world.lakeside.username, start=START)
    open_referral(page, web_server, task["id"])
    page.click("#action-reject summary")
    page.select_option("#reject_code", "no-capacity")
    page.fill("#reject_text", "   ")
    page.click("#action-reject button[type=submit]")
    error = page.locator("#reject_text-error")
    expect(error).to_be_visible()
    assert "statusReason.text is required" in error.inner_text()
    expect(page.locator("#action-reject")).to_have_attribute("open", "")
    check(page, "07-decline-needs-a-reason")
    page.fill("#reject_text", "Our waiting list is closed until March.")
    page.click("#action-reject button[type=submit]")
    expect(page.locator("#status")).to_contain_text("Declined")
    assert "waiting list is closed" in page.locator("#status-reason").inner_text()


def test_open_referral_to_two_organizations(browser_page, web_server, world, check):
    task = send_referral(world, world.patient, candidates=(world.lakeside.organization,
                                                           world.hillside.organization))
    lakeside = browser_page
    hillside = new_page(browser_page.context.browser)
    sign_in(lakeside, web_server, world.lakeside.username, start=START)
    sign_in(hillside, web_server, world.hillside.username, start=START)
    for page in (lakeside, hillside):
        page.goto(f"{web_server.root}/workspace/")
        offer = page.locator(f"#offers tr[data-task='{task['id']}']")
        expect(offer).to_be_visible()
        assert "Marisol" not in offer.inner_text()  # patient details after accepting
    check(hillside, "08-queue-with-open-referral")
    open_referral(hillside, web_server, task["id"])
    assert "Open referral" in hillside.locator("#offer").inner_text()
    assert "Marisol" not in hillside.content()
    check(hillside, "09-open-referral")

    open_referral(lakeside, web_server, task["id"])
    lakeside.click("#action-claim button")
    expect(lakeside.locator("#notice")).to_contain_text("now yours")
    expect(lakeside.locator("#patient")).to_contain_text("Marisol Delgado")

    # the open page at the other provider refreshes itself into "withdrawn"
    expect(hillside.locator("#withdrawn")).to_be_visible(timeout=30_000)
    check(hillside, "10-withdrawn")
    hillside.goto(f"{web_server.root}/workspace/")
    expect(hillside.locator(f"tr[data-task='{task['id']}']")).to_have_count(0)
    hillside.context.close()


def test_stale_page_says_so(browser_page, web_server, world, check):
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    mine = browser_page
    colleague = new_page(browser_page.context.browser)
    sign_in(mine, web_server, world.lakeside.username, start=START)
    sign_in(colleague, web_server, world.lakeside.username, start=START)
    open_referral(mine, web_server, task["id"])
    mine.click("#action-reject summary")  # an open form pauses the page's refresh
    open_referral(colleague, web_server, task["id"])
    colleague.click("#action-accept button")
    expect(colleague.locator("#status")).to_contain_text("Accepted")
    mine.select_option("#reject_code", "no-capacity")
    mine.fill("#reject_text", "Full this month")
    mine.click("#action-reject button[type=submit]")
    expect(mine.locator("#notice")).to_contain_text("Someone else acted first")
    expect(mine.locator("#status")).to_contain_text("Accepted")
    check(mine, "11-stale-page")
    assert world.clinic.get(f"Task/{task['id']}").json()["status"] == "accepted"
    colleague.context.close()


def test_another_organization_sees_nothing(browser_page, web_server, world, check):
    task = send_referral(world, world.patient, owner=world.lakeside.organization)
    offered = send_referral(world, world.patient, candidates=(world.hillside.organization,))
    page = browser_page
    sign_in(page, web_server, world.outsider.username, start=START)
    page.goto(f"{web_server.root}/workspace/")
    assert "Marisol" not in page.content() and task["id"] not in page.content()
    assert offered["id"] not in page.content()
    check(page, "12-other-organization-queue")
    for task_id in (task["id"], offered["id"]):
        open_referral(page, web_server, task_id)
        assert page.locator("h1").inner_text() == "Not found"
        assert "Marisol" not in page.content()
    page.goto(f"{web_server.root}/workspace/?patient=Delgado")
    assert "No referral matches" in page.locator("main").inner_text()


def test_capacity_numbers_and_notifications(browser_page, web_server, world, check):
    page = browser_page
    sign_in(page, web_server, world.lakeside.username, start=START)
    page.goto(f"{web_server.root}/workspace/capacity")
    service = page.locator("#service-lakeside-therapy")
    service.locator("select[name=capacity]").select_option("waitlist")
    service.locator("input[name=wait]").fill("21")
    service.locator("input[value=medicaid]").check()
    service.locator("button[type=submit]").click()
    expect(page.locator("#notice")).to_contain_text("Saved and confirmed")
    saved = page.locator("#service-lakeside-therapy")
    assert "No Capacity - Has Waitlist" in saved.inner_text()
    assert "typical wait 21 days" in saved.inner_text() and "confirmed just now" in \
        saved.inner_text()
    check(page, "13-capacity")
    page.goto(f"{web_server.root}/workspace/numbers?period=30d")
    assert int(page.locator("#received").inner_text()) >= 3
    assert int(page.locator("#completed").inner_text()) >= 0
    check(page, "14-numbers")
    page.goto(f"{web_server.root}/workspace/settings")
    page.fill("#email", "referrals@lakeside.example.org")
    page.click("button[value=save]")
    expect(page.locator("#notice")).to_contain_text("referrals@lakeside.example.org")
    check(page, "15-notifications")


def test_clinic_offers_an_open_referral_from_the_providers_page(browser_page, web_server,
                                                                world, check):
    page = browser_page
    sign_in(page, web_server, world.doctor.username, start="/app/login")
    page.goto(f"{web_server.root}/app/patients/{world.other_patient}/providers")
    page.check("#offer-lakeside-therapy")
    page.check("#offer-hillside-therapy")
    check(page, "16-clinic-ticks-two-providers")
    page.click("button:has-text('Offer to the ticked providers')")
    to = page.locator("#service").inner_text()
    assert "An open referral" in to and "Lakeside Behavioral Health" in to \
        and "Hillside Counseling" in to
    page.click("button:has-text('Send referral')")
    page.wait_for_url(re.compile(r".*/app/referrals/[\w.-]+$"))
    task_id = page.url.rsplit("/", 1)[1]
    assert "an open list of providers" in page.locator("h1").inner_text()
    task = world.clinic.get(f"Task/{task_id}").json()
    assert "owner" not in task and task["status"] == "requested"
    provider = new_page(browser_page.context.browser)
    sign_in(provider, web_server, world.hillside.username, start=START)
    provider.goto(f"{web_server.root}/workspace/")
    expect(provider.locator(f"#offers tr[data-task='{task_id}']")).to_be_visible()
    provider.context.close()
