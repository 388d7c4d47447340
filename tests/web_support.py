"""Test support for our web apps, shared by every app's tests (HTTP and browser).

`web_server` (module scope, per database backend) runs the whole server with authentication
on, on a loopback port, with the first-party app clients registered for its address. Its
`network` builds what a test needs through real interfaces: organizations and a small
provider directory, staff users (Practitioner, PractitionerRole, account), Backend Services
clients that act for an organization over HTTP, patients screened by a clinic.
`sign_in_http` signs a user in to an app with `requests` (no browser).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from fhir_server.auth.cli import add_client, add_user
from fhir_server.auth.context import SYSTEM
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call
from tests.auth_support import Keys, assertion
from tests.live import FhirHttp, LiveServer

PASSWORD = "correct horse battery staple"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = "http://hospital.example.org/mrn"
SNOMED = "http://snomed.info/sct"
MH_CATEGORY = "http://mh-referral.example.org/fhir/CodeSystem/mh-service-category"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class Staff:
    username: str
    practitioner: str
    role: str
    organization: str
    name: str


@dataclass
class Network:
    """Builds organizations, services, staff and data on the running server."""

    server: WebServer
    keys: Keys = field(default_factory=Keys)
    clients: dict[str, FhirHttp] = field(default_factory=dict)

    @property
    def call(self) -> Call:
        return Call(services=self.server.services, base_url=self.server.base, access=SYSTEM)

    def put(self, resource: dict) -> dict:
        """Store a directory resource (visible to every organization) as the system."""
        crud.update(self.call, resource["resourceType"], resource["id"], resource)
        return resource

    def organization(self, org_id: str, name: str) -> str:
        self.put({"resourceType": "Organization", "id": org_id, "active": True, "name": name,
                  "identifier": [{"system": NPI, "value": str(abs(hash(org_id)) % 10**10)}]})
        return f"Organization/{org_id}"

    def staff(self, username: str, org_id: str, given: str, family: str,
              admin: bool = False, manager: bool = False) -> Staff:
        """A Practitioner with a PractitionerRole at the organization, and their account
        (`manager`: manager of the organization; `admin`: the network administrator)."""
        pid, rid = f"pr-{username}".replace("_", "-"), f"role-{username}".replace("_", "-")
        self.put({"resourceType": "Practitioner", "id": pid, "active": True,
                  "name": [{"given": [given], "family": family, "prefix": ["Dr"]}]})
        self.put({"resourceType": "PractitionerRole", "id": rid, "active": True,
                  "practitioner": {"reference": f"Practitioner/{pid}"},
                  "organization": {"reference": f"Organization/{org_id}"}})
        add_user(self.server.db, username, PASSWORD, f"Practitioner/{pid}",
                 f"Organization/{org_id}", practitioner_role=f"PractitionerRole/{rid}",
                 admin=admin, manager=manager)
        return Staff(username, f"Practitioner/{pid}", f"PractitionerRole/{rid}",
                     f"Organization/{org_id}", f"Dr {given} {family}")

    def service(self, sid: str, org_id: str, name: str, category: str, snomed: str,
                languages: tuple[str, ...] = ("en", "es"), around_the_clock: bool = False,
                lat: float = 42.36, lon: float = -71.06, telecom: list[dict] | None = None,
                hours: list[dict] | None = None) -> str:
        """A HealthcareService with a Location (the directory shape $match reads)."""
        self.put({"resourceType": "Location", "id": f"loc-{sid}", "status": "active",
                  "name": f"{name} office", "address": {"line": ["1 Main St"],
                                                        "city": "Boston", "state": "MA"},
                  "position": {"latitude": lat, "longitude": lon}})
        service: dict[str, Any] = {
            "resourceType": "HealthcareService", "id": sid, "active": True, "name": name,
            "providedBy": {"reference": f"Organization/{org_id}"},
            "category": [{"coding": [{"system": MH_CATEGORY, "code": category}]}],
            "type": [{"coding": [{"system": SNOMED, "code": snomed}]}],
            "location": [{"reference": f"Location/loc-{sid}"}],
            "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": c}]}
                              for c in languages]}
        if around_the_clock:
            service["availableTime"] = [{"daysOfWeek": DAYS, "allDay": True}]
        elif hours:
            service["availableTime"] = hours
        if telecom:
            service["telecom"] = telecom
        self.put(service)
        return f"HealthcareService/{sid}"

    def client_for(self, org_id: str) -> FhirHttp:
        """A Backend Services client of the organization, with a fresh token."""
        client_id = f"backend-{org_id}"
        if client_id not in self.clients:
            add_client(self.server.db, client_id, f"Organization/{org_id}", "system/*.cruds",
                       jwks=Keys.public(self.keys.rsa))
        token_url = f"{self.server.root}/auth/token"
        resp = requests.post(token_url, data={
            "grant_type": "client_credentials", "scope": "system/*.cruds",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(self.keys.rsa, client_id, token_url)}, timeout=30)
        assert resp.status_code == 200, resp.text
        http = FhirHttp(self.server.base,
                        headers={"Authorization": f"Bearer {resp.json()['access_token']}"})
        self.clients[client_id] = http
        return http

    def screened_patient(self, clinic: FhirHttp, staff: Staff, given: str, family: str,
                         phq9: list[int], gad7: list[int] | None = None,
                         authored: str = "2026-11-20T10:00:00Z",
                         earlier_phq9: list[int] | None = None) -> str:
        """A patient of the clinic (written by the clinic's system) with screenings."""
        from tests.test_screening_http import qr_for

        mrn = f"MRN-{uuid.uuid4().hex[:8]}"
        patient = clinic.post("Patient", {
            "resourceType": "Patient", "active": True,
            "identifier": [{"type": {"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": MRN, "value": mrn}],
            "name": [{"given": [given], "family": family}], "gender": "female",
            "birthDate": "1988-06-14", "managingOrganization": {"reference": staff.organization},
            "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47",
                                                         "code": "es"}]}, "preferred": True}],
            "address": [{"city": "Boston", "extension": [{
                "url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                    {"url": "latitude", "valueDecimal": 42.35},
                    {"url": "longitude", "valueDecimal": -71.05}]}]}]}).json()
        ref = f"Patient/{patient['id']}"
        if earlier_phq9:
            older = qr_for("phq-9", earlier_phq9, ref, author=staff.role)
            older["authored"] = "2026-09-01T10:00:00Z"
            clinic.post("QuestionnaireResponse", older)
        qr = qr_for("phq-9", phq9, ref, author=staff.role)
        qr["authored"] = authored
        clinic.post("QuestionnaireResponse", qr)
        if gad7:
            gad = qr_for("gad-7", gad7, ref, author=staff.role)
            gad["authored"] = authored
            clinic.post("QuestionnaireResponse", gad)
        return patient["id"]

    def patient_account(self, patient_id: str, username: str) -> str:
        """The patient's own account (`users add --patient`)."""
        from fhir_server.auth.cli import add_patient_user

        add_patient_user(self.server.db, username, PASSWORD, f"Patient/{patient_id}")
        return username

    def refer(self, clinic: FhirHttp, staff: Staff, patient_id: str, service_id: str,
              supporting: list[str], consent: bool = True, priority: str = "routine"
              ) -> dict:
        """A referral sent by the clinic's system the way the care team's app sends it
        (one transaction: Consent, ServiceRequest with the screening answers `supporting`,
        Task owned by the service's organization); returns {task, service_request,
        consent}."""
        from fhir_server.web.clinician import bundle
        from fhir_server.web.forms import new_key

        service = clinic.get(f"HealthcareService/{service_id}").json()
        referral = bundle.Referral(
            key=new_key(), patient={"resourceType": "Patient", "id": patient_id},
            requester=staff.role, organization=staff.organization,
            routing=bundle.Routing(owner=service["providedBy"]["reference"],
                                   service=f"HealthcareService/{service_id}"),
            service_code=("306226009", "Referral to mental health counseling service"),
            priority=priority, reason="PHQ-9 18: moderately severe", supporting=supporting,
            consent=consent)
        answer = clinic.post("", {"resourceType": "Bundle", "type": "transaction",
                                  "entry": bundle.referral_entries(referral)}).json()
        created = {e["resource"]["resourceType"]: e["resource"] for e in answer["entry"]}
        return {"task": created["Task"], "service_request": created["ServiceRequest"],
                "consent": created.get("Consent")}


@dataclass
class WebServer:
    root: str
    db: Any
    app: Any
    services: Any
    settings: Any
    secret_file: Path
    network: Network = field(init=False)

    def __post_init__(self) -> None:
        self.network = Network(self)

    @property
    def base(self) -> str:
        return f"{self.root}/fhir"


def start_web_server(database, tmp_path: Path, **extra: str):
    """Start the server with auth on and the app clients registered; returns (WebServer,
    LiveServer)."""
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.features.web_apps import register_app_clients
    from fhir_server.seed import seed_definitions

    secret = tmp_path / "web-secret.key"
    settings = Settings.from_env(
        database_url=database.url.render_as_string(hide_password=False), base_url="",
        auth_mode="on", web_secret_file=str(secret), web_refresh_seconds=10, **extra)
    app = create_app(settings, db=database)
    services = app.extensions["fhir_services"]
    seed_definitions(services)
    live = LiveServer(app)
    root = f"http://127.0.0.1:{live.port}"
    register_app_clients(database, settings, [root])
    return WebServer(root, database, app, services, settings, secret), live


@pytest.fixture(scope="module")
def web_server(database, tmp_path_factory):
    """The whole server with auth on, our apps signed in through its authorization server."""
    server, live = start_web_server(database, tmp_path_factory.mktemp("web"))
    yield server
    live.stop()


def sign_in_http(server: WebServer, username: str, app_path: str = "/app",
                 start: str | None = None, session: requests.Session | None = None
                 ) -> requests.Session:
    """Sign `username` in to an app with requests (login form, approval); returns the
    signed-in session. `start` is where to begin (default: the app's /login)."""
    browser = session or requests.Session()
    r = browser.get(start or f"{server.root}{app_path}/login", allow_redirects=False,
                    timeout=30)
    assert r.status_code in (302, 303), r.text
    r = approve_http(server, browser, r.headers["Location"], username)
    assert r.status_code == 303, r.text
    return browser


def approve_http(server: WebServer, browser: requests.Session, authorize_url: str,
                 username: str) -> requests.Response:
    """Drive authorize → login → approve; returns the response of the app's callback."""
    r = browser.get(authorize_url, allow_redirects=False, timeout=30)
    assert r.status_code in (302, 303), r.text
    cont = server.root + r.headers["Location"]
    page = browser.get(cont, timeout=30)
    if 'name="password"' in page.text:
        r = browser.post(f"{server.root}/auth/login", data={
            "username": username, "password": PASSWORD, "next": r.headers["Location"]},
            allow_redirects=False, timeout=30)
        assert r.status_code == 303, r.text
        page = browser.get(cont, timeout=30)
    rid = re.search(r'name="rid" value="([\w-]+)"', page.text).group(1)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
    r = browser.post(f"{server.root}/auth/approve", data={
        "rid": rid, "csrf": csrf, "decision": "approve"}, allow_redirects=False, timeout=30)
    assert r.status_code == 302, r.text
    return browser.get(r.headers["Location"], allow_redirects=False, timeout=30)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([\w-]+)"', html).group(1)


def hidden(html: str, name: str) -> str:
    return re.search(rf'name="{name}" value="([^"]*)"', html).group(1)
