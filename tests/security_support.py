"""A real server with authentication on, several organizations and their clients and
users, and a referral world written through the API by the clinics' own tokens: the
ground the security tests stand on."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

import requests

from fhir_server.auth.cli import add_client, add_user
from fhir_server.auth.context import SYSTEM
from fhir_server.auth.grants import s256
from fhir_server.interactions.bundles import process_bundle
from fhir_server.interactions.context import Call
from tests.auth_support import Keys, assertion
from tests.live import FhirHttp, LiveServer
from tests.samples import sample
from tests.test_screening_http import qr_for

PASSWORD = "correct horse battery"
APP = "picker-app"
APP_REDIRECT = "http://app.example/redirect"
APP_LAUNCH = "http://app.example/launch"


def ref(target: str) -> dict[str, str]:
    return {"reference": target}


@dataclass
class SecureServer:
    """A live server with auth on; `client(org)` gives a FhirHttp with a fresh token."""

    live: LiveServer
    database: Any
    app: Any
    keys: Keys = field(default_factory=Keys)
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def services(self) -> Any:
        return self.app.extensions["fhir_services"]

    @property
    def base(self) -> str:
        return self.live.base

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.live.port}"

    @property
    def token_url(self) -> str:
        return f"{self.root}/auth/token"

    def register(self, client_id: str, org: str, scope: str = "system/*.cruds",
                 **kw: Any) -> None:
        add_client(self.database, client_id, f"Organization/{org}", scope,
                   jwks=Keys.public(self.keys.rsa), **kw)

    def token(self, client_id: str, scope: str = "system/*.cruds") -> requests.Response:
        return requests.post(self.token_url, data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(self.keys.rsa, client_id, self.token_url)},
            timeout=30)

    def client(self, client_id: str, scope: str = "system/*.cruds") -> FhirHttp:
        resp = self.token(client_id, scope)
        assert resp.status_code == 200, resp.text
        http = FhirHttp(self.base, headers={
            "Authorization": f"Bearer {resp.json()['access_token']}"})
        http.access_token = resp.json()["access_token"]
        return http

    def add_user(self, username: str, org: str, *, admin: bool = False) -> None:
        add_user(self.database, username, PASSWORD, f"Practitioner/{username.replace('_', '-')}",
                 f"Organization/{org}", admin=admin)

    def browser(self, username: str) -> requests.Session:
        session = requests.Session()
        resp = session.post(f"{self.root}/auth/login", data={
            "username": username, "password": PASSWORD, "next": "/auth/login"},
            allow_redirects=False, timeout=30)
        assert resp.status_code == 303, resp.text
        return session

    def user_client(self, username: str, scope: str = "openid fhirUser user/*.rs") -> FhirHttp:
        """A FhirHttp with a user token got through sign-in, approval and code exchange."""
        session = self.browser(username)
        verifier = secrets.token_urlsafe(48)
        params = {"response_type": "code", "client_id": APP, "redirect_uri": APP_REDIRECT,
                  "scope": scope, "state": "s", "aud": self.base,
                  "code_challenge": s256(verifier), "code_challenge_method": "S256"}
        resp = session.get(f"{self.root}/auth/authorize", params=params,
                           allow_redirects=False, timeout=30)
        rid = re.search(r"rid=([\w-]+)", resp.headers["Location"]).group(1)
        page = session.get(f"{self.root}/auth/authorize/continue", params={"rid": rid},
                           timeout=30)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        resp = session.post(f"{self.root}/auth/approve", data={
            "rid": rid, "csrf": csrf, "decision": "approve"}, allow_redirects=False,
            timeout=30)
        code = re.search(r"code=([^&]+)", resp.headers["Location"]).group(1)
        token = requests.post(self.token_url, data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": APP_REDIRECT,
            "client_id": APP, "code_verifier": verifier}, timeout=30)
        assert token.status_code == 200, token.text
        http = FhirHttp(self.base, headers={
            "Authorization": f"Bearer {token.json()['access_token']}"})
        http.access_token = token.json()["access_token"]
        return http

    def picker_page(self, session: requests.Session, query: str) -> str:
        """The standalone-launch patient picker page for `query`, as `session`'s user."""
        params = {"response_type": "code", "client_id": APP, "redirect_uri": APP_REDIRECT,
                  "scope": "launch/patient openid fhirUser patient/*.rs",
                  "state": secrets.token_hex(8), "aud": self.base,
                  "code_challenge": s256(secrets.token_urlsafe(48)),
                  "code_challenge_method": "S256"}
        resp = session.get(f"{self.root}/auth/authorize", params=params,
                           allow_redirects=False, timeout=30)
        assert resp.status_code in (302, 303), resp.text
        rid = re.search(r"rid=([\w-]+)", resp.headers["Location"]).group(1)
        page = session.get(f"{self.root}/auth/authorize/continue",
                           params={"rid": rid, "q": query}, timeout=30)
        assert page.status_code == 200, page.text
        return page.text


def start(database: Any) -> SecureServer:
    """A live server with auth on over `database`, with the directory loaded."""
    from fhir_server.app import create_app
    from fhir_server.config import Settings
    from fhir_server.seed import seed_definitions

    settings = Settings.from_env(database_url=database.url.render_as_string(hide_password=False),
                                 base_url="", auth_mode="on", required_profiles="none",
                                 require_if_match_for_tasks=False, login_max_failures=3)
    app = create_app(settings, db=database)
    services = app.extensions["fhir_services"]
    seed_definitions(services)
    server = SecureServer(LiveServer(app), database, app)
    add_client(database, APP, "Organization/A", "launch launch/patient openid fhirUser "
               "patient/*.rs user/*.rs", public=True, redirect_uris=[APP_REDIRECT],
               launch_uri=APP_LAUNCH)
    return server


def directory(server: SecureServer, orgs: list[str]) -> None:
    """Organizations (directory data) written by the server itself."""
    entries = [{"resource": sample("Organization", id=o, name=f"Org {o}",
                                   identifier=[{"system": "urn:test:org", "value": o}]),
                "request": {"method": "PUT", "url": f"Organization/{o}"}} for o in orgs]
    process_bundle(Call(services=server.services, base_url=server.base, access=SYSTEM),
                   {"resourceType": "Bundle", "type": "transaction", "entry": entries})


def create(http: FhirHttp, resource: dict) -> dict:
    resp = http.post(resource["resourceType"], resource)
    assert resp.status_code == 201, resp.text
    return resp.json()


def referral(http: FhirHttp, requester: str, owner: str, *, patient_name: str,
             consent: bool, phq9: list[int] | None = None) -> dict[str, str]:
    """A referral as a clinic writes it with its own token: Patient, screening QR,
    Condition, optional active Consent, ServiceRequest and Task. Returns their refs."""
    patient = create(http, sample("Patient", name=[{"family": patient_name, "given": ["Ana"]}],
                                  managingOrganization=ref(f"Organization/{requester}"),
                                  identifier=[{"system": "urn:test:mrn",
                                               "value": secrets.token_hex(4)}]))
    p = f"Patient/{patient['id']}"
    qr = create(http, qr_for("phq-9", phq9 or [2, 2, 2, 2, 2, 2, 2, 2, 1], p))
    cond = create(http, sample("Condition", subject=ref(p)))
    support = [ref(f"QuestionnaireResponse/{qr['id']}")]
    out = {"patient": p, "qr": f"QuestionnaireResponse/{qr['id']}",
           "condition": f"Condition/{cond['id']}"}
    if consent:
        k = create(http, sample("Consent", patient=ref(p)))
        support.insert(0, ref(f"Consent/{k['id']}"))
        out["consent"] = f"Consent/{k['id']}"
    sr = create(http, sample("ServiceRequest", subject=ref(p),
                             requester=ref(f"Organization/{requester}"),
                             supportingInfo=support, reasonReference=[ref(out["condition"])]))
    out["sr"] = f"ServiceRequest/{sr['id']}"
    task = sample("Task", focus=ref(out["sr"]), requester=ref(f"Organization/{requester}"),
                  owner=ref(f"Organization/{owner}"))
    task["for"] = ref(p)
    task["code"]["coding"][0]["code"] = "fulfill"
    out["task"] = f"Task/{create(http, task)['id']}"
    return out
