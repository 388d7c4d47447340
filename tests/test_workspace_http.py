"""The provider workspace over HTTP (no browser): sign-in as a provider's staff, the queue,
a referral's page and its actions through the server's rules, stale pages, errors next to
the action, capacity, numbers and the intake e-mail setting."""

from __future__ import annotations

import re

import pytest

from tests import web_support
from tests.web_support import csrf_of, sign_in_http
from tests.workspace_support import CRISIS, build_world, send_referral

web_server = web_support.web_server  # the live server fixture, one per module

APP = "/workspace"


@pytest.fixture(scope="module")
def world(web_server):
    return build_world(web_server.network)


def signed_in(web_server, staff):
    return sign_in_http(web_server, staff.username, APP)


def page(browser, web_server, path):
    r = browser.get(f"{web_server.root}{APP}{path}", timeout=30)
    assert r.status_code == 200, r.text
    return r.text


def act(browser, web_server, task_id, action, **fields):
    """Post one action from the referral page (its CSRF value and version)."""
    html = page(browser, web_server, f"/referrals/{task_id}")
    version = re.search(r'name="version" value="(\d+)"', html).group(1)
    data = {"csrf": csrf_of(html), "action": action, "version": version, **fields}
    return browser.post(f"{web_server.root}{APP}/referrals/{task_id}", data=data,
                        allow_redirects=True, timeout=30)


def test_signed_out_page_offers_sign_in(web_server):
    import requests

    r = requests.get(f"{web_server.root}{APP}/", timeout=30)
    assert r.status_code == 200 and "Sign in" in r.text
    assert "Provider workspace" in requests.get(f"{web_server.root}/", timeout=30).text


def test_queue_lists_urgent_first_with_its_clock(web_server, world):
    routine = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    urgent = send_referral(world, world.patient, owner=world.lakeside.organization,
                           priority="urgent", service=CRISIS)
    browser = signed_in(web_server, world.lakeside)
    html = page(browser, web_server, "/")
    assert "Lakeside Behavioral Health" in html
    urgent_at = html.index(f'data-task="{urgent["id"]}"')
    assert urgent_at < html.index(f'data-task="{routine["id"]}"')
    section = html[html.index('id="urgent-h"'):html.index('id="new-h"')]
    assert urgent["id"] in section and "accept in" in section
    assert "Marisol Delgado" in section and "Riverside Family Health Center" in section
    cookie = browser.cookies.get("mhr_workspace", path="/workspace")
    assert len(cookie) < 3800  # what the session keeps must fit a browser's cookie


def test_accept_start_complete_with_an_outcome(web_server, world):
    task = send_referral(world, world.patient, owner=world.lakeside.organization)
    browser = signed_in(web_server, world.lakeside)
    html = page(browser, web_server, f"/referrals/{task['id']}")
    assert "Marisol Delgado" in html and "PHQ-9" in html  # consent: screening shown
    assert "Thoughts of self-harm (item 9): More than half the days" in html
    r = act(browser, web_server, task["id"], "accept")
    assert "Accepted. The referral is yours" in r.text
    r = act(browser, web_server, task["id"], "start")
    assert "Care started" in r.text
    key = re.search(r'name="complete_key" value="([\w-]+)"', r.text).group(1)
    r = act(browser, web_server, task["id"], "complete", complete_key=key,
            complete_code="409063005", complete_date="2026-11-30",
            complete_note="Six sessions; discharged to primary care.")
    assert "Completed. The referring clinic sees the outcome" in r.text, r.text
    stored = world.clinic.get(f"Task/{task['id']}").json()
    assert stored["status"] == "completed"
    procedure = world.clinic.get(stored["output"][0]["valueReference"]["reference"]).json()
    assert procedure["code"]["coding"][0]["code"] == "409063005"
    assert procedure["basedOn"] == [task["focus"]]


def test_reject_needs_a_reason_shown_next_to_it(web_server, world):
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    browser = signed_in(web_server, world.lakeside)
    r = act(browser, web_server, task["id"], "reject", reject_code="no-capacity",
            reject_text="   ")
    assert r.status_code == 422
    assert 'id="reject_text-error"' in r.text
    assert "statusReason.text is required" in r.text
    r = act(browser, web_server, task["id"], "reject", reject_code="", reject_text="Full")
    assert r.status_code == 400 and 'id="reject_code-error"' in r.text
    r = act(browser, web_server, task["id"], "reject", reject_code="no-capacity",
            reject_text="Waiting list closed until March")
    assert "Declined" in r.text
    stored = world.clinic.get(f"Task/{task['id']}").json()
    assert stored["status"] == "rejected"
    assert stored["statusReason"]["coding"][0]["code"] == "no-capacity"


def test_stale_page_says_so_and_overwrites_nothing(web_server, world):
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    browser = signed_in(web_server, world.lakeside)
    html = page(browser, web_server, f"/referrals/{task['id']}")
    version = re.search(r'name="version" value="(\d+)"', html).group(1)
    colleague = signed_in(web_server, world.lakeside)
    act(colleague, web_server, task["id"], "accept")
    r = browser.post(f"{web_server.root}{APP}/referrals/{task['id']}", data={
        "csrf": csrf_of(html), "action": "reject", "version": version,
        "reject_code": "no-capacity", "reject_text": "Full"}, timeout=30)
    assert "Someone else acted first" in r.text
    assert world.clinic.get(f"Task/{task['id']}").json()["status"] == "accepted"


def test_hold_resume_and_could_not_complete_carry_their_reasons(web_server, world):
    task = send_referral(world, world.other_patient, owner=world.lakeside.organization)
    browser = signed_in(web_server, world.lakeside)
    act(browser, web_server, task["id"], "accept")
    r = act(browser, web_server, task["id"], "hold", hold_code="", hold_text="Away")
    assert r.status_code == 400 and 'id="hold_code-error"' in r.text  # coded reason needed
    r = act(browser, web_server, task["id"], "hold", hold_code="waiting-for-patient",
            hold_text="Patient travelling until the 14th")
    assert "Put on hold" in r.text, r.text
    stored = world.clinic.get(f"Task/{task['id']}").json()
    assert stored["status"] == "on-hold"
    assert stored["statusReason"]["coding"][0]["code"] == "waiting-for-patient"
    r = act(browser, web_server, task["id"], "resume", resume_text="Back; first visit booked")
    assert "Resumed" in r.text, r.text
    assert world.clinic.get(f"Task/{task['id']}").json()["status"] == "in-progress"
    r = act(browser, web_server, task["id"], "fail", fail_code="patient-unreachable",
            fail_text="Three calls and a letter, no answer")
    assert "Closed as not completed" in r.text, r.text
    stored = world.clinic.get(f"Task/{task['id']}").json()
    assert stored["status"] == "failed"
    assert stored["statusReason"]["text"] == "Three calls and a letter, no answer"
    assert "Three calls and a letter" in page(browser, web_server, f"/referrals/{task['id']}")


def test_queue_finds_a_patient_by_record_number(web_server, world):
    task = send_referral(world, world.patient, owner=world.lakeside.organization)
    patient = world.clinic.get(f"Patient/{world.patient}").json()
    number = patient["identifier"][0]["value"]
    browser = signed_in(web_server, world.lakeside)
    found = page(browser, web_server, f"/?patient={number}")
    assert f'data-task="{task["id"]}"' in found
    other = page(browser, web_server, "/?patient=NOPE-0000")
    assert task["id"] not in other and "No referral matches" in other
