"""SMART flows end to end on a live loopback server: discovery, Backend Services (RS384 and
ES384), standalone and EHR launch driven by fhirclient, refresh, introspection, revocation."""

from __future__ import annotations

import time

import pytest
import requests
from fhirclient import client as fhirclient
from joserfc import jwt
from joserfc.jwk import KeySet

from fhir_server.auth.audit_store import list_audit_events
from tests.auth_support import LAUNCH_URI, REDIRECT, AuthHarness, code_from


@pytest.fixture(scope="module")
def h(database):
    harness = AuthHarness(database)
    yield harness
    harness.stop()


def exchange(h: AuthHarness, location: str, verifier: str, **extra: str) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code_from(location),
            "redirect_uri": REDIRECT, "code_verifier": verifier, "client_id": "app-public",
            **extra}
    return requests.post(h.token_url, data=data, timeout=30)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_smart_configuration(h):
    r = requests.get(f"{h.base}/.well-known/smart-configuration",
                     headers={"Accept": "text/html"}, timeout=30)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    conf = r.json()
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert "authorization_code" in conf["grant_types_supported"]
    assert "client_credentials" in conf["grant_types_supported"]
    assert set(conf["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    for cap in ("launch-ehr", "launch-standalone", "client-confidential-asymmetric",
                "sso-openid-connect", "permission-v1", "permission-v2", "authorize-post"):
        assert cap in conf["capabilities"]
    for field in ("authorization_endpoint", "token_endpoint", "jwks_uri", "issuer",
                  "introspection_endpoint", "revocation_endpoint"):
        assert conf[field].startswith("http://127.0.0.1:"), field
    assert conf["token_endpoint"] == h.token_url


def test_openid_configuration_and_jwks(h):
    for url in (f"{h.base}/.well-known/openid-configuration",
                f"{h.root}/.well-known/openid-configuration"):
        conf = requests.get(url, timeout=30).json()
        assert conf["issuer"] == h.base
        assert "RS256" in conf["id_token_signing_alg_values_supported"]
    jwks = requests.get(f"{h.root}/auth/jwks", timeout=30).json()
    assert jwks["keys"][0]["kty"] == "RSA" and jwks["keys"][0]["kid"]
    assert "d" not in jwks["keys"][0]  # never the private part


def test_capability_statement_oauth_uris(h):
    cs = requests.get(f"{h.base}/metadata", timeout=30).json()
    ext = cs["rest"][0]["security"]["extension"][0]
    uris = {e["url"]: e["valueUri"] for e in ext["extension"]}
    assert uris["authorize"] == f"{h.root}/auth/authorize"
    assert uris["token"] == h.token_url


@pytest.mark.parametrize("client_id", ["backend-rs", "backend-es"])
def test_backend_services(h, client_id):
    r = h.backend_token(client_id, "system/Task.rsud system/Observation.rs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] <= 300
    expected = {"backend-rs": "system/Task.rus",
                "backend-es": "system/Task.rs system/Observation.s"}
    assert body["scope"] == expected[client_id]  # clamped to the registration
    assert "refresh_token" not in body
    assert r.headers["Cache-Control"] == "no-store" and r.headers["Pragma"] == "no-cache"
    search = requests.get(f"{h.base}/Task", headers=bearer(body["access_token"]), timeout=30)
    assert search.status_code == 200
    restriction = search.json()["restriction"]
    org = "Organization/cbo1" if client_id == "backend-rs" else "Organization/cbo2"
    assert restriction["organization"] == org
    assert restriction["rules"]  # narrowed to the referral compartment
    info = requests.post(f"{h.root}/auth/introspect", data={"token": body["access_token"]},
                         headers=bearer(body["access_token"]), timeout=30).json()
    assert info["active"] is True and info["client_id"] == client_id
    assert info["scope"] == expected[client_id] and info["exp"] > time.time()


@pytest.mark.parametrize("scope", ["system/Task.c", "system/Observation.rs", "system/Task.d"])
def test_backend_scope_without_overlap_is_refused_not_emptied(h, scope):
    """backend-rs is registered for system/Task.rsu (and ServiceRequest, Patient .rs): a
    request sharing no permission with that gets invalid_scope, never an empty scope such as
    'system/Task.'."""
    r = h.backend_token("backend-rs", scope)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_scope"
    partial = h.backend_token("backend-rs", f"{scope} system/Task.r")
    assert partial.status_code == 200, partial.text
    assert partial.json()["scope"] == "system/Task.r"


def test_wildcard_registration_clamps_requested_wildcard(h):
    r = h.backend_token("backend-es", "system/*.rs")
    assert r.status_code == 200, r.text
    assert set(r.json()["scope"].split()) == {"system/Task.rs", "system/*.s"}


def fhir_client(h: AuthHarness, **settings: str) -> fhirclient.FHIRClient:
    base = {"app_id": "app-public", "api_base": h.base, "redirect_uri": REDIRECT,
            "scope": "openid fhirUser offline_access patient/*.rs"}
    base.update(settings)
    return fhirclient.FHIRClient(settings=base)


def test_standalone_launch_with_fhirclient(h):
    smart = fhir_client(h)
    url = smart.authorize_url
    assert "code_challenge_method=S256" in url and "launch%2Fpatient" in url
    browser = h.browser()
    location = h.approve(browser, url, patient_query="smith", patient="pat1")
    smart.handle_callback(location)
    assert smart.patient_id == "pat1"
    assert smart.launch_context["need_patient_banner"] is True
    assert smart.launch_context["smart_style_url"].endswith("/auth/smart-style.json")
    assert "patient/*.rs" in smart.launch_context["scope"].split()
    assert smart.server.request_json("Patient/pat1")["id"] == "pat1"
    assert smart.server.request_json("Practitioner/p1")["id"] == "p1"  # own fhirUser
    old_token = smart.server.auth.access_token
    assert smart.reauthorize()  # offline_access refresh through fhirclient
    assert smart.server.auth.access_token != old_token
    assert smart.server.request_json("Observation/o1")["id"] == "o1"


def test_ehr_launch_with_fhirclient(h):
    browser = h.browser("dr_a")
    r = browser.get(f"{h.root}/auth/launch", params={
        "client_id": "app-secret", "patient": "pat2", "encounter": "enc9",
        "context": "ServiceRequest/sr1"}, allow_redirects=False, timeout=30)
    assert r.status_code == 302
    assert r.headers["Location"].startswith(LAUNCH_URI + "?iss=")
    launch = r.headers["Location"].split("launch=")[1]
    smart = fhir_client(h, app_id="app-secret", app_secret=h.secret, launch_token=launch,
                        scope="openid fhirUser patient/*.rs user/*.rs")
    assert "launch=" in smart.authorize_url
    location = h.approve(browser, smart.authorize_url, patient_query=None)
    smart.handle_callback(location)
    ctx = smart.launch_context
    assert smart.patient_id == "pat2" and ctx["encounter"] == "enc9"
    assert ctx["fhirContext"] == [{"reference": "ServiceRequest/sr1"}]
    assert ctx["need_patient_banner"] is False
    assert "refresh_token" not in ctx and smart.server.auth.refresh_token is None
    assert smart.server.request_json("Patient/pat2")["id"] == "pat2"


def test_id_token_rs256_with_fhir_user(h):
    params, verifier = h.authorize_params(scope="launch/patient openid fhirUser patient/*.rs")
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params))
    body = exchange(h, location, verifier).json()
    jwks = KeySet.import_key_set(requests.get(f"{h.root}/auth/jwks", timeout=30).json())
    token = jwt.decode(body["id_token"], jwks, algorithms=["RS256"])
    assert token.header["alg"] == "RS256" and token.header["kid"]
    assert token.claims["iss"] == h.base and token.claims["aud"] == "app-public"
    assert token.claims["fhirUser"] == f"{h.base}/Practitioner/p1"
    assert token.claims["sub"] == "dr_a" and token.claims["exp"] > time.time()
    info = requests.post(f"{h.root}/auth/introspect", data={"token": body["access_token"]},
                         headers=bearer(body["access_token"]), timeout=30).json()
    assert info["sub"] == "dr_a" and info["patient"] == "pat1"
    assert info["fhirUser"].endswith("Practitioner/p1")


def test_authorize_post_and_refresh_rules(h):
    params, verifier = h.authorize_params(
        scope="launch/patient online_access patient/*.rs patient/Observation.c")
    location = h.approve(h.browser(), f"{h.root}/auth/authorize", method="POST", data=params)
    body = exchange(h, location, verifier).json()
    assert "refresh_token" in body  # online_access
    refresh = body["refresh_token"]
    narrower = requests.post(h.token_url, data={
        "grant_type": "refresh_token", "refresh_token": refresh, "client_id": "app-public",
        "scope": "patient/Patient.rs"}, timeout=30)
    assert narrower.status_code == 200, narrower.text
    assert narrower.json()["scope"] == "patient/Patient.rs"
    assert narrower.json()["patient"] == "pat1"
    again = requests.post(h.token_url, data={
        "grant_type": "refresh_token", "refresh_token": narrower.json()["refresh_token"],
        "client_id": "app-public"}, timeout=30)
    assert again.status_code == 200
    assert "patient/Observation.c" in again.json()["scope"].split()  # original grant kept


def test_no_refresh_token_without_offline_or_online_access(h):
    params, verifier = h.authorize_params(scope="launch/patient patient/*.rs")
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params))
    body = exchange(h, location, verifier).json()
    assert "refresh_token" not in body and body["expires_in"] == 3600


def test_revoke_refresh_token_revokes_grant(h):
    params, verifier = h.authorize_params()
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params))
    body = exchange(h, location, verifier).json()
    ok = requests.get(f"{h.base}/Patient/pat1", headers=bearer(body["access_token"]), timeout=30)
    assert ok.status_code == 200
    r = requests.post(f"{h.root}/auth/revoke", data={
        "token": body["refresh_token"], "client_id": "app-public"}, timeout=30)
    assert r.status_code == 200
    after = requests.get(f"{h.base}/Patient/pat1", headers=bearer(body["access_token"]),
                         timeout=30)
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["WWW-Authenticate"]


def test_introspection_inactive_and_token_grants_audited(h):
    token = h.backend_token().json()["access_token"]
    r = requests.post(f"{h.root}/auth/introspect", data={"token": "invalid_token_value"},
                      headers=bearer(token), timeout=30)
    assert r.status_code == 200 and r.json() == {"active": False}
    granted = [e for e in list_audit_events(h.db, outcome="0")
               if e["subtype"][0]["code"] == "token"]
    assert granted and granted[-1]["agent"][0]["who"]["identifier"]["value"] == "backend-rs"


def test_token_endpoint_cors_only_for_registered_origins(h):
    params, verifier = h.authorize_params(scope="launch/patient patient/*.rs")
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params))
    ok = requests.post(h.token_url, data={
        "grant_type": "authorization_code", "code": code_from(location),
        "redirect_uri": REDIRECT, "code_verifier": verifier, "client_id": "app-public"},
        headers={"Origin": "http://app.example"}, timeout=30)
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == "http://app.example"
    evil = requests.post(h.token_url, data={"grant_type": "refresh_token",
                                            "refresh_token": "x", "client_id": "app-public"},
                         headers={"Origin": "https://evil.example"}, timeout=30)
    assert "Access-Control-Allow-Origin" not in evil.headers


def test_cli_keygen_then_token(h, tmp_path, capsys):
    import argparse
    import json

    from fhir_server.auth.cli import register_cli

    def run(*argv: str) -> None:
        parser = argparse.ArgumentParser()
        register_cli(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(list(argv))
        db = h.db if getattr(args, "auth_needs_db", True) else None
        assert args.auth_handler(args, db) == 0

    priv, pub = tmp_path / "demo.jwk", tmp_path / "demo.jwks"
    run("clients", "keygen", "--private", str(priv), "--public", str(pub), "--alg", "ES384")
    assert oct(priv.stat().st_mode & 0o777) == "0o600"
    run("clients", "add", "--client-id", "demo", "--organization", "Organization/demo",
        "--scope", "system/Task.rsu", "--jwks", str(pub))
    capsys.readouterr()
    run("clients", "token", "--client-id", "demo", "--key-file", str(priv),
        "--token-url", h.token_url, "--scope", "system/Task.rs")
    body = json.loads(capsys.readouterr().out)
    assert body["scope"] == "system/Task.rs"
    r = requests.get(f"{h.base}/Task", headers=bearer(body["access_token"]), timeout=30)
    assert r.status_code == 200 and r.json()["restriction"]["organization"] == "Organization/demo"
