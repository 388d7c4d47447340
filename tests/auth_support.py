"""Test harness for the authorization server: a small Flask app on a loopback port.

The app mounts `create_auth_blueprint` plus a minimal FHIR surface (metadata, read,
search) that calls `authenticate`, `check_interaction` and `restrict_for` the way the
REST layer does, and serves test JWKS URLs.
"""

from __future__ import annotations

import re
import secrets
import time
import uuid
from dataclasses import asdict
from typing import Any

import requests
from flask import Flask, jsonify, request
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

import fhir_server.auth.auth_schema  # noqa: F401  (registers the auth tables)
from fhir_server.auth.audit import OUTCOME_DENIED, build_audit_event
from fhir_server.auth.audit_store import list_audit_events, record_audit
from fhir_server.auth.bearer import authenticate
from fhir_server.auth.cli import add_client, add_user
from fhir_server.auth.discovery import capability_security
from fhir_server.auth.grants import s256
from fhir_server.auth.policy import check_interaction, restrict_for
from fhir_server.auth.server import create_auth_blueprint
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.storage.db import Database
from tests.live import LiveServer

REDIRECT = "http://app.example/redirect"
LAUNCH_URI = "http://app.example/launch"
PASSWORD = "correct horse battery"
PATIENTS = [
    {"resourceType": "Patient", "id": "pat1", "name": [{"family": "Smith", "given": ["Ann"]}],
     "birthDate": "1980-02-03"},
    {"resourceType": "Patient", "id": "pat2", "name": [{"family": "Jones", "given": ["Bo"]}]},
]
RESOURCES: dict[str, dict[str, Any]] = {
    **{f"Patient/{p['id']}": p for p in PATIENTS},
    "Practitioner/p1": {"resourceType": "Practitioner", "id": "p1"},
    "Encounter/enc9": {"resourceType": "Encounter", "id": "enc9", "status": "finished",
                       "class": {"code": "AMB"}, "subject": {"reference": "Patient/pat2"}},
    "ServiceRequest/sr1": {"resourceType": "ServiceRequest", "id": "sr1", "status": "active",
                           "intent": "order", "subject": {"reference": "Patient/pat2"}},
    "Observation/o1": {
        "resourceType": "Observation", "id": "o1", "status": "final",
        "subject": {"reference": "Patient/pat1"},
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
    },
    "Observation/o2": {
        "resourceType": "Observation", "id": "o2", "status": "final",
        "subject": {"reference": "Patient/pat2"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
    },
}


def patient_lookup(_user: Any, query: str) -> list[dict[str, Any]]:
    """Patient picker backend: name substring match (every test user sees both patients)."""
    q = query.lower()
    out = []
    for p in PATIENTS:
        name = p["name"][0]
        display = f"{' '.join(name['given'])} {name['family']}"
        if q and q in display.lower():
            out.append({"id": p["id"], "display": display, "birthDate": p.get("birthDate")})
    return out


class Keys:
    """Client key pairs generated at test time."""

    def __init__(self) -> None:
        self.rsa = RSAKey.generate_key(2048, parameters={"kid": "rs-1"}, private=True)
        self.ec = ECKey.generate_key("P-384", parameters={"kid": "es-1"}, private=True)
        self.rsa_other = RSAKey.generate_key(2048, parameters={"kid": "rs-1"}, private=True)

    @staticmethod
    def public(*keys: Any) -> dict[str, Any]:
        return {"keys": [k.as_dict(private=False) for k in keys]}


def assertion(
    key: Any, client_id: str, aud: str, *, alg: str = "RS384", kid: str | None = None,
    lifetime: int = 240, jti: str | None = None, extra_header: dict | None = None,
    claims: dict | None = None,
) -> str:
    """A client assertion JWT (signed with `key`)."""
    header = {"alg": alg, "typ": "JWT", "kid": kid or key.kid, **(extra_header or {})}
    body = {"iss": client_id, "sub": client_id, "aud": aud, "exp": int(time.time()) + lifetime,
            "jti": jti or uuid.uuid4().hex, **(claims or {})}
    return jwt.encode(header, body, key, algorithms=[alg])


def make_app(db: Database, settings: Settings, jwks_store: dict[str, dict]) -> Flask:
    """Flask app: the auth blueprint + a minimal policy-enforcing FHIR surface."""
    app = Flask("auth-test")
    app.register_blueprint(create_auth_blueprint(
        db, settings, patient_lookup=patient_lookup,
        hidden_references=lambda _user, refs: [r for r in refs if r not in RESOURCES]))

    @app.errorhandler(FhirError)
    def fhir_error(exc: FhirError):  # type: ignore[no-untyped-def]
        if exc.status in (403, 404):  # 401s are audited by authenticate() itself
            record_audit(db, build_audit_event(
                getattr(request, "auth_ctx", None), "read", OUTCOME_DENIED,
                entities=[request.path.removeprefix("/fhir/")],
                description=f"{exc.status} {exc.diagnostics}", address=request.remote_addr))
        resp = jsonify(exc.outcome())
        resp.status_code = exc.status
        resp.headers.update(exc.headers)
        resp.headers["Content-Type"] = "application/fhir+json"
        return resp

    @app.get("/fhir/metadata")
    def metadata():  # type: ignore[no-untyped-def]
        return jsonify({
            "resourceType": "CapabilityStatement", "status": "active", "date": "2026-01-01",
            "kind": "instance", "fhirVersion": "4.0.1", "format": ["json"],
            "rest": [{"mode": "server",
                      "security": capability_security(settings, request.host_url)}],
        })

    @app.get("/fhir/<res_type>/<res_id>")
    def read(res_type: str, res_id: str):  # type: ignore[no-untyped-def]
        ctx = authenticate(request.headers, db, settings, address=request.remote_addr)
        request.auth_ctx = ctx
        check_interaction(ctx, "read", res_type)
        resource = RESOURCES.get(f"{res_type}/{res_id}")
        if resource is None:
            raise FhirError(404, "not-found", f"{res_type}/{res_id} is not known")
        check_interaction(ctx, "read", res_type, resource)
        return jsonify(resource)

    @app.get("/fhir/<res_type>")
    def search(res_type: str):  # type: ignore[no-untyped-def]
        ctx = authenticate(request.headers, db, settings)
        request.auth_ctx = ctx
        check_interaction(ctx, "search-type", res_type)
        return jsonify({"restriction": asdict(restrict_for(ctx, res_type))})

    @app.get("/test/jwks/<name>")
    def test_jwks(name: str):  # type: ignore[no-untyped-def]
        resp = jsonify(jwks_store[name])
        resp.headers["Cache-Control"] = "no-store"
        return resp

    return app


class AuthHarness:
    """A running test server with registered clients and users."""

    def __init__(self, db: Database, settings: Settings | None = None) -> None:
        self.db = db
        self.keys = Keys()
        self.jwks_store: dict[str, dict] = {"es": Keys.public(self.keys.ec)}
        self.settings = settings or Settings(base_url="", auth_mode="on")
        self.server = LiveServer(make_app(db, self.settings, self.jwks_store))
        self.root = f"http://127.0.0.1:{self.server.port}"
        self.base = f"{self.root}/fhir"
        self.token_url = f"{self.root}/auth/token"
        self.secret = "s3cret-" + secrets.token_hex(8)
        self._register()

    def _register(self) -> None:
        db = self.db
        add_user(db, "dr_a", PASSWORD, "Practitioner/p1", "Organization/ehr1")
        add_user(db, "dr_b", PASSWORD, "Practitioner/p2", "Organization/ehr1")
        add_client(db, "backend-rs", "Organization/cbo1",
                   "system/Task.rsu system/ServiceRequest.rs system/Patient.rs",
                   jwks=Keys.public(self.keys.rsa))
        add_client(db, "backend-es", "Organization/cbo2", "system/Task.rs system/*.s",
                   jwks_url=f"{self.root}/test/jwks/es")
        app_scope = ("launch launch/patient openid fhirUser offline_access online_access "
                     "patient/*.cruds user/*.rs user/Task.cu")
        add_client(db, "app-public", "Organization/ehr1", app_scope, public=True,
                   redirect_uris=[REDIRECT], launch_uri=LAUNCH_URI, name="Referral app")
        add_client(db, "app-secret", "Organization/ehr1", app_scope, secret=self.secret,
                   redirect_uris=[REDIRECT], launch_uri=LAUNCH_URI)
        add_client(db, "app-narrow", "Organization/ehr1", "launch/patient patient/Patient.r",
                   public=True, redirect_uris=[REDIRECT])

    def denials(self) -> int:
        """Number of denial AuditEvents recorded so far."""
        return len(list_audit_events(self.db, outcome=OUTCOME_DENIED, limit=100000))

    def stop(self) -> None:
        self.server.stop()

    # -- helpers -------------------------------------------------------------------
    def backend_token(self, client_id: str = "backend-rs", scope: str = "system/Task.rs",
                      **kw: Any) -> requests.Response:
        key = self.keys.ec if client_id == "backend-es" else self.keys.rsa
        alg = "ES384" if client_id == "backend-es" else "RS384"
        kw.setdefault("alg", alg)
        return requests.post(self.token_url, data={
            "grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(key, client_id, self.token_url, **kw),
        }, timeout=30)

    def browser(self, username: str = "dr_a") -> requests.Session:
        """A browser session logged in as `username`."""
        session = requests.Session()
        r = session.post(f"{self.root}/auth/login", data={
            "username": username, "password": PASSWORD, "next": "/auth/login",
        }, allow_redirects=False, timeout=30)
        assert r.status_code == 303, r.text
        return session

    def authorize_params(self, client_id: str = "app-public", scope: str | None = None,
                         verifier: str | None = None, **extra: str) -> tuple[dict, str]:
        verifier = verifier or secrets.token_urlsafe(48)
        params = {
            "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT,
            "scope": scope or "launch/patient openid fhirUser offline_access patient/*.rs",
            "state": secrets.token_hex(16), "aud": self.base,
            "code_challenge": s256(verifier), "code_challenge_method": "S256", **extra,
        }
        return params, verifier

    def approve(self, session: requests.Session, authorize_url: str,
                patient_query: str | None = "smith", patient: str | None = "pat1",
                method: str = "GET", data: dict | None = None) -> str:
        """Drive /authorize → approval page → approve; returns the redirect Location."""
        if method == "GET":
            r = session.get(authorize_url, allow_redirects=False, timeout=30)
        else:
            r = session.post(authorize_url, data=data, allow_redirects=False, timeout=30)
        assert r.status_code in (302, 303), r.text
        location = r.headers["Location"]
        if location.startswith(REDIRECT):
            return location  # error redirect
        rid = re.search(r"rid=([\w-]+)", location).group(1)
        page = session.get(f"{self.root}{location}" + (
            f"&q={patient_query}" if patient_query else ""), timeout=30)
        assert page.status_code == 200, page.text
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        form = {"rid": rid, "csrf": csrf, "decision": "approve"}
        if patient_query:
            form.update({"q": patient_query, "patient": patient or ""})
        r = session.post(f"{self.root}/auth/approve", data=form, allow_redirects=False,
                         timeout=30)
        assert r.status_code == 302, r.text
        return r.headers["Location"]


def code_from(location: str) -> str:
    m = re.search(r"[?&]code=([\w-]+)", location)
    assert m, location
    return m.group(1)
