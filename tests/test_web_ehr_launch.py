"""The clinician app launched from an external EHR (`/app/launch`, `/app/callback`: the URLs
EHRs register), end to end over HTTP.

Two real servers on loopback: the hub (`web_server`: our apps and API, auth on) and a second,
full instance of our server acting as the external EHR (its own database of the same backend,
a user and a client registration for our app, a patient with scored PHQ-9 and GAD-7). A
`requests.Session` plays the browser through both authorization servers.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests

from fhir_server.app import create_app
from fhir_server.auth.cli import add_client, add_user
from fhir_server.auth.context import SYSTEM
from fhir_server.config import Settings
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call
from fhir_server.seed import seed_definitions
from fhir_server.storage.db import Database
from fhir_server.storage.migrate import upgrade
from fhir_server.storage.repository import Repository
from fhir_server.web.config import WebConfig
from tests.dbs import fresh_database_url
from tests.live import LiveServer
from tests.test_screening_http import qr_for
from tests.web_support import (  # noqa: F401
    PASSWORD,
    approve_http,
    csrf_of,
    hidden,
    start_web_server,
)

CLIENT_ID = "mh-referral-app"
EHR_SCOPE = ("launch launch/patient openid fhirUser patient/Patient.rs patient/Observation.rs "
             "patient/QuestionnaireResponse.rs patient/ServiceRequest.cr")
MRN = "http://ehr.example.org/mrn"


@dataclass
class Ehr:
    root: str
    db: Database
    patient: str
    bare_patient: str

    @property
    def base(self) -> str:
        return f"{self.root}/fhir"


@pytest.fixture(scope="module")
def hub(database, tmp_path_factory, ehr):
    server, live = start_web_server(database, tmp_path_factory.mktemp("hub"),
                                    app_allowed_iss=ehr.base)
    add_client(ehr.db, CLIENT_ID, "Organization/ehr1", EHR_SCOPE, public=True,
               redirect_uris=[f"{server.root}/app/callback"],
               launch_uri=f"{server.root}/app/launch", name="Mental-health referral app")
    net = server.network
    net.organization("riverside", "Riverside Family Health Center")
    net.organization("lakeside", "Lakeside Behavioral Health")
    net.service("lakeside-therapy", "lakeside", "Lakeside counseling", "therapy", "306226009")
    net.staff("dr_okafor", "riverside", "Amara", "Okafor", admin=True)
    yield server
    live.stop()


@pytest.fixture(scope="module")
def ehr(database, tmp_path_factory):
    url = fresh_database_url(database.engine.dialect.name, tmp_path_factory.mktemp("ehr"))
    db = Database(url)
    upgrade(db)
    app = create_app(Settings(database_url=url, base_url="", auth_mode="on",
                              web_secret_file=str(tmp_path_factory.mktemp("k") / "k")),
                     db=db)
    services = app.extensions["fhir_services"]
    seed_definitions(services)
    live = LiveServer(app)
    root = f"http://127.0.0.1:{live.port}"
    call = Call(services=services, base_url=f"{root}/fhir", access=SYSTEM)
    add_user(db, "dr_ehr", PASSWORD, "Practitioner/p1", "Organization/ehr1", admin=True)
    crud.update(call, "Practitioner", "p1", {"resourceType": "Practitioner", "id": "p1",
                                             "name": [{"family": "Okafor"}]})
    patient = crud.create(call, "Patient", {
        "resourceType": "Patient", "name": [{"family": "Rivera", "given": ["Ana", "Maria"]}],
        "identifier": [{"system": MRN, "value": "E-1001"}],
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
    yield Ehr(root=root, db=db, patient=patient, bare_patient=bare)
    live.stop()
    db.dispose()


def browser_at(ehr: Ehr) -> requests.Session:
    session = requests.Session()
    r = session.post(f"{ehr.root}/auth/login", data={
        "username": "dr_ehr", "password": PASSWORD, "next": "/auth/login"},
        allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    return session


def ehr_launch(browser: requests.Session, ehr: Ehr, patient: str | None = None) -> str:
    r = browser.get(f"{ehr.root}/auth/launch", params={
        "client_id": CLIENT_ID, "patient": patient or ehr.patient},
        allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def to_authorize(browser: requests.Session, app_launch_url: str) -> str:
    r = browser.get(app_launch_url, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def approve(browser: requests.Session, ehr: Ehr, authorize_url: str,
            decision: str = "approve") -> str:
    r = browser.get(authorize_url, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text
    location = r.headers["Location"]
    rid = re.search(r"rid=([\w-]+)", location).group(1)
    page = browser.get(f"{ehr.root}{location}", timeout=30)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    r = browser.post(f"{ehr.root}/auth/approve", data={
        "rid": rid, "csrf": csrf, "decision": decision}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return r.headers["Location"]


def launched(hub, ehr: Ehr, patient: str | None = None) -> requests.Session:
    """EHR launch, then the sign-in to the network; returns the browser on /app/ehr."""
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr, patient)))
    assert callback.startswith(f"{hub.root}/app/callback?")
    r = browser.get(callback, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/auth/authorize?" in r.headers["Location"], r.text
    r = approve_http(hub, browser, r.headers["Location"], "dr_okafor")
    assert r.status_code == 303 and r.headers["Location"] == "/app/ehr", r.text
    return browser


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


def test_ehr_launch_reads_patient_and_latest_scores(hub, ehr):  # noqa: F811
    browser = browser_at(ehr)
    app_launch = ehr_launch(browser, ehr)
    assert app_launch.startswith(f"{hub.root}/app/launch?iss=")
    authorize = to_authorize(browser, app_launch)
    params = parse_qs(urlsplit(authorize).query)
    assert authorize.startswith(f"{ehr.root}/auth/authorize?")
    assert params["aud"] == [ehr.base] and params["code_challenge_method"] == ["S256"]
    assert params["client_id"] == [CLIENT_ID] and params["launch"]
    assert len(params["code_challenge"][0]) == 43 and len(params["state"][0]) >= 32
    assert "launch" in params["scope"][0].split()
    cookie = next(c for c in browser.cookies if c.name == "mhr_clinician_auth")
    assert cookie.path == "/app" and cookie.has_nonstandard_attr("HttpOnly")
    browser = launched(hub, ehr)
    page = browser.get(f"{hub.root}/app/ehr", timeout=30)
    assert page.status_code == 200 and "<h1>Ana Maria Rivera</h1>" in page.text
    assert '<dd id="birth-date">2 Apr 1990</dd>' in page.text
    rows = re.findall(r'<tr class="score"><td>([^<]*)</td><td[^>]*>([^<]*)</td>', page.text)
    assert rows == [("PHQ-9", "10"), ("GAD-7", "6")], page.text  # the latest, not the 20
    assert page.headers["Cache-Control"] == "no-store"


def test_patient_joins_the_network_and_the_referral_is_copied_to_the_ehr(hub, ehr):
    browser = launched(hub, ehr)
    page = browser.get(f"{hub.root}/app/ehr", timeout=30).text
    r = browser.post(f"{hub.root}/app/ehr", data={
        "csrf": csrf_of(page), "idempotency_key": hidden(page, "idempotency_key")},
        allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"].startswith("/app/patients/"), r.text
    patient_id = r.headers["Location"].rsplit("/", 1)[1]
    again = browser.post(f"{hub.root}/app/ehr", data={
        "csrf": csrf_of(page), "idempotency_key": hidden(page, "idempotency_key")},
        allow_redirects=False, timeout=30)
    assert again.headers["Location"] == r.headers["Location"]  # the same patient, reused
    send_url = f"{hub.root}/app/patients/{patient_id}/send?service=lakeside-therapy"
    form = browser.get(send_url, timeout=30).text
    assert 'name="ehr_copy"' in form
    before = len(ehr_service_requests(ehr, ehr.patient))
    r = browser.post(send_url, data={
        "csrf": csrf_of(form), "idempotency_key": hidden(form, "idempotency_key"),
        "service": "lakeside-therapy", "reason": "Moderate depression, PHQ-9 10",
        "priority": "routine", "ehr_copy": "yes"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303, r.text
    done = browser.get(hub.root + r.headers["Location"], timeout=30).text
    assert "A copy was written to the EHR" in done, done
    copies = ehr_service_requests(ehr, ehr.patient)
    assert len(copies) == before + 1
    copy = copies[-1]
    key = hidden(form, "idempotency_key")
    assert copy["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{key}"}]
    assert copy["requester"] == {"reference": "Practitioner/p1"}
    assert copy["subject"] == {"reference": f"Patient/{ehr.patient}"}


def test_markup_from_the_ehr_is_escaped(hub, ehr):
    browser = launched(hub, ehr, patient=ehr.bare_patient)
    page = browser.get(f"{hub.root}/app/ehr", timeout=30)
    assert "Bo &lt;script&gt;x&lt;/script&gt;" in page.text and "<script>x" not in page.text
    assert "No PHQ-9 or GAD-7 result is recorded in the EHR" in page.text
    assert "cannot be matched" not in page.text


@pytest.mark.parametrize("iss", ["", "ehr.example/fhir", "ftp://ehr.example/fhir",
                                 "javascript:alert(1)", "http:///fhir"])
def test_bad_iss(hub, iss):
    r = requests.get(f"{hub.root}/app/launch", params={"iss": iss, "launch": "abc"},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "iss")


def test_missing_launch(hub, ehr):
    r = requests.get(f"{hub.root}/app/launch", params={"iss": ehr.base},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "no launch parameter")


def test_iss_not_in_allow_list(hub, ehr):
    r = requests.get(f"{hub.root}/app/launch", params={"iss": "https://other.example/fhir",
                                                       "launch": "x"},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "is not an EHR this app accepts")


def test_allow_list_config():
    on = WebConfig.from_settings(Settings(auth_mode="on", app_allowed_iss=""))
    assert not on.iss_allowed("https://any.example/fhir")  # production: no list, no launch
    dev = WebConfig.from_settings(Settings(auth_mode="off", app_allowed_iss=""))
    assert dev.iss_allowed("https://any.example/fhir")
    listed = WebConfig.from_settings(Settings(
        auth_mode="off", app_allowed_iss="https://a.example/fhir/, https://b.example/fhir"))
    assert listed.iss_allowed("https://a.example/fhir")
    assert listed.iss_allowed("https://b.example/fhir/")
    assert not listed.iss_allowed("https://c.example/fhir")


@pytest.fixture(scope="module")
def open_hub(database, tmp_path_factory, ehr, hub):
    """A hub that accepts the test EHR and a closed port as issuers."""
    port = closed_port()
    server, live = start_web_server(database, tmp_path_factory.mktemp("open"),
                                    app_allowed_iss=f"{ehr.base},http://127.0.0.1:{port}/fhir")
    server.closed = port
    yield server
    live.stop()


def test_ehr_down_says_which_ehr_and_what_to_do(open_hub):
    iss = f"http://127.0.0.1:{open_hub.closed}/fhir"
    r = requests.get(f"{open_hub.root}/app/launch", params={"iss": iss, "launch": "abc"},
                     allow_redirects=False, timeout=30)
    assert_html_error(r, 502, "could not be reached")
    assert iss in r.text and "What to do" in r.text and "IT help desk" in r.text


def test_discovery_without_smart(open_hub, ehr):
    r = requests.get(f"{open_hub.root}/app/launch", params={
        "iss": f"{ehr.base}/Patient", "launch": "abc"}, allow_redirects=False, timeout=30)
    assert_html_error(r, 400, "not an EHR this app accepts")


def test_state_tampering_other_browser_and_replay(hub, ehr):
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)))
    r = browser.get(with_query(callback, state="tampered-" + "0" * 32), timeout=30)
    assert_html_error(r, 400, "does not match a sign-in started in this browser")
    r = requests.get(callback, allow_redirects=False, timeout=30)  # no pending cookie
    assert_html_error(r, 400, "does not match a sign-in started in this browser")
    r = browser.get(callback, allow_redirects=False, timeout=30)  # the genuine one works
    assert r.status_code == 303, r.text
    r = browser.get(callback, allow_redirects=False, timeout=30)  # once
    assert_html_error(r, 400, "does not match a sign-in started in this browser")


def test_token_failure_and_denial(hub, ehr):
    browser = browser_at(ehr)
    callback = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)))
    r = browser.get(with_query(callback, code="not-the-code"), timeout=30)
    assert_html_error(r, 502, "token exchange with the EHR")
    denied = approve(browser, ehr, to_authorize(browser, ehr_launch(browser, ehr)),
                     decision="deny")
    r = browser.get(denied, timeout=30)
    assert_html_error(r, 400, "did not authorize the app")


def test_launch_handle_unknown_to_ehr(hub, ehr):
    browser = browser_at(ehr)
    authorize = to_authorize(browser, f"{hub.root}/app/launch?" + urlencode({
        "iss": ehr.base, "launch": "forged-launch-handle"}))
    r = browser.get(authorize, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text
    assert r.headers["Location"].startswith(f"{hub.root}/app/callback?error=")
    r = browser.get(r.headers["Location"], timeout=30)
    assert_html_error(r, 400, "did not authorize the app: Unknown or expired launch")
