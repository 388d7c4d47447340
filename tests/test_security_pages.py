"""Every page of every staff app, opened by a signed-in user of a foreign organization with
another organization's patient, referral and screening ids in its path and query: nothing
hidden comes back. Every page of every patient app, opened the same way by another patient
signed in with their own account. Pages of apps added later are swept automatically
(`fhir_server.web.APPS`).

A page leaks when it shows the clinic's marker words (the patient's name) or an id of a
hidden resource that its URL did not name."""

from __future__ import annotations

import re
from importlib import import_module
from types import SimpleNamespace

import pytest
import requests

from fhir_server.web import APPS
from fhir_server.web.apps import AppSpec
from tests.patient_support import follow_up_task
from tests.security_support import ref
from tests.web_support import WebServer, sign_in_http, web_server  # noqa: F401

MARKER = "Quillfeather"
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"


@pytest.fixture(scope="module")
def world(web_server):  # noqa: F811
    net = web_server.network
    net.organization("clinic", "Harbor Clinic")
    net.organization("evil", "Elsewhere Services")
    net.organization("cbo", "Bay Counseling")
    staff = net.staff("dr_harbor", "clinic", "Ana", "Harbor")
    # a manager: the sweep also opens the pages only managers may use (the dashboard)
    net.staff("dr_evil", "evil", "Eve", "Else", manager=True)
    net.staff("harbor_manager", "clinic", "Hal", "Harbor", manager=True)
    clinic = net.client_for("clinic")
    patient = net.screened_patient(clinic, staff, "Mara", MARKER, [2, 2, 2, 2, 2, 2, 2, 2, 1])
    sr = clinic.post("ServiceRequest", {
        "resourceType": "ServiceRequest", "meta": {"profile": [SDOHCC + "SDOHCC-ServiceRequest"]},
        "status": "active", "intent": "order",
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "410606002"}]}],
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "384692006"}]},
        "subject": ref(f"Patient/{patient}"), "requester": ref("Organization/clinic"),
        "authoredOn": "2026-11-20T10:00:00Z", "priority": "routine"})
    assert sr.status_code == 201, sr.text
    sr = sr.json()
    task = clinic.post("Task", {
        "resourceType": "Task", "meta": {"profile": [SDOHCC + "SDOHCC-TaskForReferralManagement"]},
        "status": "requested", "intent": "order", "priority": "routine",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                             "code": "fulfill"}]}, "authoredOn": "2026-11-20T10:00:00Z",
        "focus": ref(f"ServiceRequest/{sr['id']}"), "for": ref(f"Patient/{patient}"),
        "requester": ref("Organization/clinic"), "owner": ref("Organization/cbo")})
    assert task.status_code == 201, task.text
    task = task.json()
    qrs = clinic.get("QuestionnaireResponse", params={"subject": f"Patient/{patient}"}).json()
    hidden = {"patient": patient, "task": task["id"], "service_request": sr["id"],
              "qr": qrs["entry"][0]["resource"]["id"]}
    return web_server, hidden


def _fill(rule: str, hidden: dict[str, str]) -> list[str]:
    """The URLs a rule gives with every path variable set to each hidden id."""
    names = re.findall(r"<(?:[^:<>]+:)?([^<>]+)>", rule)
    if not names:
        return [rule]
    urls = []
    for value in hidden.values():
        url = rule
        for name in names:
            url = re.sub(rf"<(?:[^:<>]+:)?{name}>", value, url)
        urls.append(url)
    return urls


def _leaks(text: str, url: str, hidden: dict[str, str]) -> list[str]:
    found = [MARKER] if MARKER in text else []
    return found + [h for h in hidden.values() if h in text and h not in url]


def _is_patient_app(spec: AppSpec) -> bool:
    return "patient/" in spec.scope and "user/" not in spec.scope


@pytest.mark.parametrize("module", APPS)
def test_no_page_shows_hidden_data_to_a_foreign_organization(world, module):
    server, hidden = world
    spec = import_module(module).SPEC
    if _is_patient_app(spec):
        pytest.skip(f"{spec.name} is for patients (swept by the next test)")
    failures = _sweep(server, spec, sign_in_http(server, "dr_evil", spec.path), hidden)
    assert not failures, "\n".join(failures)


def _sweep(server: WebServer, spec: AppSpec, browser: requests.Session,
           hidden: dict[str, str]) -> list[str]:
    """Open every GET page of the app with each hidden id in its path, with and without a
    query naming the hidden patient; the pages that fail or leak."""
    rules = [r for r in server.app.url_map.iter_rules()
             if r.rule.startswith(spec.path + "/") and "GET" in r.methods
             and not r.rule.endswith(("/logout", "/callback", "/launch", "/login"))]
    assert rules, f"no pages found for {spec.path}"
    query = "&".join(f"{k}={v}" for k, v in (
        ("q", "Mara"), ("patient", hidden["patient"]), ("status", "requested")))
    failures = []
    for rule in rules:
        for url in _fill(rule.rule, hidden):
            for full in (url, f"{url}?{query}"):
                resp = browser.get(server.root + full, allow_redirects=False, timeout=60)
                if resp.status_code >= 500:
                    failures.append(f"{full}: {resp.status_code}")
                leaks = _leaks(resp.text, full, hidden)
                if leaks:
                    failures.append(f"{full}: {resp.status_code} shows {leaks}")
    return failures


def test_the_clinic_itself_sees_its_patient(world):
    """Not vacuous: the same page shows the marker to the clinic's own staff."""
    server, hidden = world
    browser = sign_in_http(server, "dr_harbor", "/app")
    page = browser.get(f"{server.root}/app/patients/{hidden['patient']}", timeout=60)
    assert page.status_code == 200 and MARKER in page.text


def test_the_clinics_manager_counts_the_referral_a_foreign_manager_does_not(world):
    """Not vacuous for the dashboard: the clinic's manager sees its referral counted and
    listed; the foreign manager's page (swept above) counts nothing."""
    server, hidden = world
    own = sign_in_http(server, "harbor_manager", "/dashboard")
    page = own.get(f"{server.root}/dashboard/", params={"start": "2026-11-01"}, timeout=60)
    assert page.status_code == 200 and 'id="kpi-sent">1<' in page.text
    assert "Bay Counseling" in page.text
    other = sign_in_http(server, "dr_evil", "/dashboard")
    page = other.get(f"{server.root}/dashboard/", params={"start": "2026-11-01"}, timeout=60)
    assert page.status_code == 200 and 'id="kpi-sent">0<' in page.text
    assert "Bay Counseling" not in page.text and "Harbor Clinic" not in page.text


@pytest.fixture(scope="module")
def patients(world):
    """Mara gets a referral with consent, a Task for her (the follow-up questions) and an
    account; Ivo, another patient of the same clinic, signs in with his own account. Last in
    the module: the referral it adds must not change what the tests above count."""
    server, hidden = world
    net = server.network
    clinic = net.client_for("clinic")
    doctor = net.staff("dr_harbor_two", "clinic", "Ben", "Harbor")
    net.service("bay-counseling", "cbo", "Bay Counseling", "therapy", "306226009")
    referral = net.refer(clinic, doctor, hidden["patient"], "bay-counseling",
                         [f"QuestionnaireResponse/{hidden['qr']}"])
    task = follow_up_task(SimpleNamespace(doctor=doctor, clinic=clinic, referral=referral,
                                          patient=hidden["patient"]))
    ivo = net.screened_patient(clinic, doctor, "Ivo", "Outsider", [1, 1, 1, 1, 1, 1, 1, 1, 0])
    net.patient_account(hidden["patient"], "mara.q")
    net.patient_account(ivo, "ivo.o")
    return server, {**hidden, "referral": referral["task"]["id"],
                    "consent": referral["consent"]["id"], "patient_task": task["id"]}


@pytest.mark.parametrize("module", APPS)
def test_no_patient_page_shows_another_patients_data(patients, module):
    server, hidden = patients
    spec = import_module(module).SPEC
    if not _is_patient_app(spec):
        pytest.skip(f"{spec.name} is for staff (swept by the previous test)")
    own = sign_in_http(server, "mara.q", spec.path)  # not vacuous: Mara sees her own
    assert MARKER in own.get(f"{server.root}{spec.path}/", timeout=60).text
    assert hidden["patient_task"] in own.get(f"{server.root}{spec.path}/", timeout=60).text
    failures = _sweep(server, spec, sign_in_http(server, "ivo.o", spec.path), hidden)
    assert not failures, "\n".join(failures)
