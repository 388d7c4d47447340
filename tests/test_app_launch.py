"""Our SMART app launched from an external EHR (`/app/launch`), end to end over HTTP.

Two real servers on loopback: the main instance (the `server` fixture: our app lives at
`/app`) and a second, full instance of our server acting as the EHR (auth on, its own fresh
database of the same backend, a registered user and a registered client for our app, a
Patient with two scored PHQ-9 QuestionnaireResponses). A `requests.Session` plays the
browser: it signs in at the EHR, starts our app from the EHR's `/auth/launch`, and follows
the redirects through our app and the EHR's authorize/approve pages.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from fhir_server.app import create_app
from fhir_server.app_launch.config import AppConfig
from fhir_server.auth.cli import add_client, add_user
from fhir_server.auth.context import SYSTEM
from fhir_server.config import Settings
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call
from fhir_server.seed import seed_definitions
from fhir_server.storage.db import Database
from fhir_server.storage.migrate import upgrade
from fhir_server.storage.repository import Repository
from tests.dbs import fresh_database_url
from tests.live import LiveServer
from tests.test_screening_http import qr_for

PASSWORD = "correct horse battery staple"
CLIENT_ID = "mh-referral-app"
APP_SCOPE = ("launch launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs "
             "patient/ServiceRequest.cr")


@dataclass
class Ehr:
    """The second instance of our server, acting as the launching EHR."""

    root: str
    db: Database
    call: Call
    patient: str
    bare_patient: str

    @property
    def base(self) -> str:
        return f"{self.root}/fhir"


def _root(server) -> str:
    return server.base.removesuffix("/fhir")


@pytest.fixture(scope="module")
def ehr(server, database, tmp_path_factory):
    backend = database.engine.dialect.name
    url = fresh_database_url(backend, tmp_path_factory.mktemp("ehr"))
    db = Database(url)
    upgrade(db)
    app = create_app(Settings(database_url=url, base_url="", auth_mode="on"), db=db)
    services = app.extensions["fhir_services"]
    seed_definitions(services)
    live = LiveServer(app)
    root = f"http://127.0.0.1:{live.port}"
    call = Call(services=services, base_url=f"{root}/fhir", access=SYSTEM)
    main = _root(server)
    add_user(db, "dr_ehr", PASSWORD, "Practitioner/p1", "Organization/ehr1", admin=True)
    add_client(db, CLIENT_ID, "Organization/ehr1", APP_SCOPE, public=True,
               redirect_uris=[f"{main}/app/callback"], launch_uri=f"{main}/app/launch",
               name="Mental-health referral app")
    crud.update(call, "Practitioner", "p1", {"resourceType": "Practitioner", "id": "p1",
                                             "name": [{"family": "Okafor"}]})
    patient = crud.create(call, "Patient", {
        "resourceType": "Patient", "name": [{"family": "Rivera", "given": ["Ana", "Maria"]}],
        "birthDate": "1990-04-02"}).stored.res_id
    bare = crud.create(call, "Patient", {
        "resourceType": "Patient", "name": [{"text": "Bo <script>x</script>"}]}).stored.res_id
    older = qr_for("phq-9", [3, 3, 3, 3, 2, 2, 2, 2, 0], f"Patient/{patient}")
    older["authored"] = "2026-10-01T09:00:00Z"
    crud.create(call, "QuestionnaireResponse", older)  # 20: severe, but not the latest
    crud.create(call, "QuestionnaireResponse",
                qr_for("phq-9", [2, 2, 1, 1, 1, 1, 1, 1, 0], f"Patient/{patient}"))  # 10
    crud.create(call, "QuestionnaireResponse",
                qr_for("gad-7", [1, 1, 1, 1, 1, 1, 0], f"Patient/{patient}"))  # 6
    yield Ehr(root=root, db=db, call=call, patient=patient, bare_patient=bare)
    live.stop()
    db.dispose()


@pytest.fixture(scope="module")
def strict_app(database):
    """A main instance with auth on and an allow-list that does not include the EHR."""
    url = database.url.render_as_string(hide_password=False)
    app = create_app(Settings(database_url=url, base_url="", auth_mode="on",
                              extra={"app_allowed_iss": "https://ehr.example.org/fhir/"}),
                     db=database)
    live = LiveServer(app)
    yield f"http://127.0.0.1:{live.port}"
    live.stop()


# -- the browser ----------------------------------------------------------------------------

def browser_at(ehr: Ehr) -> requests.Session:
    """A browser signed in at the EHR."""
    session = requests.Session()
    r = session.post(f"{ehr.root}/auth/login", data={
        "username": "dr_ehr", "password": PASSWORD, "next": "/auth/login"},
        allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return session


def ehr_launch(browser: requests.Session, ehr: Ehr, patient: str | None = None) -> str:
    """The EHR starts our app for a patient; returns our /app/launch URL (iss + launch)."""
    r = browser.get(f"{ehr.root}/auth/launch", params={
        "client_id": CLIENT_ID, "patient": patient or ehr.patient},
        allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def to_authorize(browser: requests.Session, app_launch_url: str) -> str:
    """Open our launch URL; returns the EHR authorize URL it redirects to."""
    r = browser.get(app_launch_url, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def approve(browser: requests.Session, ehr: Ehr, authorize_url: str,
            decision: str = "approve") -> str:
    """Drive the EHR's authorize → approval page → approve; returns our callback URL."""
    r = browser.get(authorize_url, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text
    location = r.headers["Location"]
    rid = re.search(r"rid=([\w-]+)", location).group(1)
    page = browser.get(f"{ehr.root}{location}", timeout=30)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    r = browser.post(f"{ehr.root}/auth/approve", data={
        "rid": rid, "csrf": csrf, "decision": decision}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def launched(server, ehr: Ehr, patient: str | None = None) -> tuple[requests.Session, str]:
    """A complete launch; returns the browser and the referral page URL."""
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr, patient)))
    assert callback.startswith(f"{_root(server)}/app/callback?")
    r = browser.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return browser, f"{_root(server)}{r.headers['Location']}"


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def assert_html_error(r: requests.Response, status: int, text: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("text/html")
    assert text in r.text, r.text


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ehr_service_requests(ehr: Ehr, patient: str) -> list[dict]:
    from fhir_server.storage.search_sql import find_ids

    with ehr.db.read() as conn:
        ids = find_ids(conn, "ServiceRequest", [("subject", f"Patient/{patient}")], limit=50)
        repo = Repository(conn)
        return [repo.read("ServiceRequest", i).resource() for i in ids]


# -- the happy path -------------------------------------------------------------------------

def test_ehr_launch_reads_patient_and_latest_phq9(server, ehr):
    browser = browser_at(ehr)
    app_launch = ehr_launch(browser, ehr)
    assert app_launch.startswith(f"{_root(server)}/app/launch?iss=")
    authorize = to_authorize(browser, app_launch)
    params = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{ehr.root}/auth/authorize?")
    assert params["aud"] == [ehr.base] and params["code_challenge_method"] == ["S256"]
    assert params["client_id"] == [CLIENT_ID] and params["launch"]
    assert len(params["code_challenge"][0]) == 43 and len(params["state"][0]) >= 32
    assert "launch" in params["scope"][0].split()
    cookie = next(c for c in browser.cookies if c.name == "mhr_app_browser")
    assert cookie.path == "/app" and cookie.has_nonstandard_attr("HttpOnly")
    callback = approve(browser, ehr, authorize)
    r = browser.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    page = browser.get(f"{_root(server)}{r.headers['Location']}", timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert '<strong id="patient-name">Ana Maria Rivera</strong>' in page.text
    assert '<span id="birth-date">1990-04-02</span>' in page.text
    rows = re.findall(r'<tr class="score"><td>([^<]*)</td><td>([^<]*)</td>\s*<td>([^<]*)</td>'
                      r'<td>([^<]*)</td>', page.text)
    assert len(rows) == 2, page.text
    title, score, date, band = rows[0]
    assert "PHQ-9" in title and score == "10"  # the latest, not the older 20
    assert date.startswith("2026-11-20") and band.startswith("Moderate depression")
    title, score, date, band = rows[1]
    assert "GAD-7" in title and score == "6" and band.startswith("Mild anxiety")
    assert 'action="/app/referral/' in page.text and 'name="csrf"' in page.text
    assert page.headers["Cache-Control"] == "no-store"


def test_referral_form_creates_service_request_in_ehr(server, ehr):
    browser, page_url = launched(server, ehr)
    page = browser.get(page_url, timeout=30)
    csrf = re.search(r'name="csrf" value="([\w-]+)"', page.text).group(1)
    before = len(ehr_service_requests(ehr, ehr.patient))
    r = browser.post(page_url, data={"csrf": csrf, "reason": "Moderate depression, PHQ-9 10",
                                     "priority": "urgent"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    page = browser.get(page_url, timeout=30)
    created = re.search(r'<code class="created">ServiceRequest/([\w.-]+)</code>', page.text)
    assert created, page.text
    stored = [sr for sr in ehr_service_requests(ehr, ehr.patient)
              if sr["id"] == created.group(1)]
    assert len(stored) == 1 and len(ehr_service_requests(ehr, ehr.patient)) == before + 1
    sr = stored[0]
    assert sr["subject"] == {"reference": f"Patient/{ehr.patient}"}
    assert sr["priority"] == "urgent" and sr["status"] == "active" and sr["intent"] == "order"
    assert sr["note"] == [{"text": "Moderate depression, PHQ-9 10"}]
    assert sr["requester"] == {"reference": "Practitioner/p1"}  # fhirUser of the id_token
    assert len(sr["supportingInfo"]) == 2  # the PHQ-9 and GAD-7 totals shown
    assert all(i["reference"].startswith("Observation/") for i in sr["supportingInfo"])


def test_referral_form_errors(server, ehr):
    browser, page_url = launched(server, ehr)
    csrf = re.search(r'name="csrf" value="([\w-]+)"',
                     browser.get(page_url, timeout=30).text).group(1)
    before = len(ehr_service_requests(ehr, ehr.patient))
    r = browser.post(page_url, data={"csrf": "forged", "reason": "x"}, timeout=30)
    assert_html_error(r, 400, "form is stale")
    r = browser.post(page_url, data={"csrf": csrf, "reason": "  "}, timeout=30)
    assert_html_error(r, 400, "give a reason")
    r = browser.post(page_url, data={"csrf": csrf, "reason": "x", "priority": "whenever"},
                     timeout=30)
    assert_html_error(r, 400, "Priority must be one of")
    assert len(ehr_service_requests(ehr, ehr.patient)) == before  # nothing written
    other = requests.get(page_url, timeout=30)  # another browser: no binding cookie
    assert_html_error(other, 400, "unknown, expired or belongs to another browser")
    r = browser.get(f"{_root(server)}/app/referral/nope", timeout=30)
    assert_html_error(r, 400, "unknown, expired")


def test_patient_without_scores_and_markup_escaped(server, ehr):
    browser, page_url = launched(server, ehr, patient=ehr.bare_patient)
    page = browser.get(page_url, timeout=30)
    assert page.status_code == 200
    assert "Bo &lt;script&gt;x&lt;/script&gt;" in page.text and "<script>" not in page.text
    assert "No PHQ-9 or GAD-7 result is recorded" in page.text
    assert '<span id="birth-date">unknown</span>' in page.text


# -- refused launches ----------------------------------------------------------------------

@pytest.mark.parametrize("iss", ["", "ehr.example/fhir", "ftp://ehr.example/fhir",
                                 "javascript:alert(1)", "http:///fhir"])
def test_bad_iss(server, iss):
    r = requests.get(f"{_root(server)}/app/launch", params={"iss": iss, "launch": "abc"},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "iss")


def test_missing_launch(server, ehr):
    r = requests.get(f"{_root(server)}/app/launch", params={"iss": ehr.base},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "no launch parameter")


def test_iss_not_in_allow_list(strict_app, ehr):
    browser = browser_at(ehr)
    launch_url = ehr_launch(browser, ehr)  # the EHR sends our app's launch URI
    app_launch = launch_url.replace(urlsplit(launch_url).netloc, urlsplit(strict_app).netloc)
    r = browser.get(app_launch, allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "is not an EHR this app accepts")
    ok = requests.get(f"{strict_app}/app/launch", allow_redirects=False, timeout=30, params={
        "iss": "https://ehr.example.org/fhir", "launch": "x"})
    assert_html_error(ok, 502, "could not be reached")  # allowed, then discovery fails


def test_allow_list_config():
    on = AppConfig.from_settings(Settings(auth_mode="on", extra={"app_allowed_iss": ""}))
    assert not on.iss_allowed("https://any.example/fhir")  # production: no list, no launch
    dev = AppConfig.from_settings(Settings(auth_mode="off", extra={"app_allowed_iss": ""}))
    assert dev.iss_allowed("https://any.example/fhir")
    listed = AppConfig.from_settings(Settings(auth_mode="off", extra={
        "app_allowed_iss": "https://a.example/fhir/, https://b.example/fhir"}))
    assert listed.iss_allowed("https://a.example/fhir")
    assert listed.iss_allowed("https://b.example/fhir/")
    assert not listed.iss_allowed("https://c.example/fhir")


def test_ehr_down(server):
    r = requests.get(f"{_root(server)}/app/launch", params={
        "iss": f"http://127.0.0.1:{closed_port()}/fhir", "launch": "abc"},
        allow_redirects=False, timeout=30)
    assert_html_error(r, 502, "could not be reached")


def test_discovery_without_smart(server):
    r = requests.get(f"{_root(server)}/app/launch", params={
        "iss": f"{server.base}/Patient", "launch": "abc"}, allow_redirects=False, timeout=30)
    assert_html_error(r, 502, "SMART discovery")


def test_state_tampering_other_browser_and_replay(server, ehr):
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)))
    r = browser.get(with_query(callback, state="tampered-" + "0" * 32), timeout=30)
    assert_html_error(r, 400, "does not match a launch")
    r = requests.get(callback, allow_redirects=False, timeout=30)  # no binding cookie
    assert_html_error(r, 400, "does not match a launch")
    r = browser.get(callback, allow_redirects=False, timeout=30)  # the genuine one works
    assert r.status_code == 303, r.text
    r = browser.get(callback, allow_redirects=False, timeout=30)  # once
    assert_html_error(r, 400, "does not match a launch")


def test_token_failure_and_denial(server, ehr):
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)))
    r = browser.get(with_query(callback, code="not-the-code"), timeout=30)
    assert_html_error(r, 502, "token exchange with the EHR failed")
    denied = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)),
                     decision="deny")
    r = browser.get(denied, timeout=30)
    assert_html_error(r, 400, "did not authorize the app")


def test_launch_handle_unknown_to_ehr(server, ehr):
    browser = browser_at(ehr)
    authorize = to_authorize(browser, f"{_root(server)}/app/launch?" + urlencode({
        "iss": ehr.base, "launch": "forged-launch-handle"}))
    r = browser.get(authorize, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text  # the EHR answers our callback with an error
    assert r.headers["Location"].startswith(f"{_root(server)}/app/callback?error=")
    r = browser.get(r.headers["Location"], timeout=30)
    assert_html_error(r, 400, "did not authorize the app: Unknown or expired launch")
