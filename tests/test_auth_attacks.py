"""Security suite: each attack must be denied, and the audit log must show the denial."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Callable

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey

from fhir_server.auth.tokens import issue_token
from tests.auth_support import REDIRECT, AuthHarness, assertion, code_from

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def h(database):
    harness = AuthHarness(database)
    yield harness
    harness.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned_jwt(header: dict, claims: dict) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}."


def hs256_jwt(header: dict, claims: dict, secret: bytes) -> str:
    head = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
    return f"{head}.{b64(sig)}"


def bearer_get(h: AuthHarness, token: str | None, path: str = "Patient/pat1",
               raw_header: str | None = None) -> requests.Response:
    headers = {}
    if raw_header is not None:
        headers["Authorization"] = raw_header
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.get(f"{h.base}/{path}", headers=headers, timeout=30)


def user_tokens(h: AuthHarness, scope: str = "launch/patient offline_access patient/*.rs",
                client_id: str = "app-public", patient: str = "pat1") -> dict:
    params, verifier = h.authorize_params(client_id=client_id, scope=scope)
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params), patient=patient)
    r = requests.post(h.token_url, data={
        "grant_type": "authorization_code", "code": code_from(location),
        "redirect_uri": REDIRECT, "code_verifier": verifier, "client_id": client_id},
        timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def stored_token(h: AuthHarness, *, aud: str | None = None, lifetime: int = 600,
                 issued_ago: int = 0) -> str:
    grant = {"scope": "system/*.rs", "organization": "Organization/cbo1",
             "aud": aud or h.base, "grant_id": uuid.uuid4().hex}
    with h.db.write() as conn:
        tok = issue_token(conn, "access", "backend-rs", grant, lifetime,
                          now=int(time.time()) - issued_ago)
    return tok.value


def server_public_pem(h: AuthHarness) -> bytes:
    jwk = requests.get(f"{h.root}/auth/jwks", timeout=30).json()["keys"][0]
    return RSAKey.import_key(jwk).as_pem(private=False)


# ---------------------------------------------------------------- resource server: 401
def _valid_backend(h: AuthHarness) -> str:
    return h.backend_token(scope="system/Patient.rs").json()["access_token"]


BEARER_ATTACKS: dict[str, Callable[[AuthHarness], requests.Response]] = {
    "missing token": lambda h: bearer_get(h, None),
    "basic scheme instead of bearer": lambda h: bearer_get(h, None, raw_header="Basic YTpi"),
    "empty bearer": lambda h: bearer_get(h, None, raw_header="Bearer "),
    "two tokens in header": lambda h: bearer_get(h, None, raw_header="Bearer a b"),
    "random opaque token": lambda h: bearer_get(h, secrets.token_urlsafe(32)),
    "tampered token": lambda h: bearer_get(h, _valid_backend(h)[:-2] + "xx"),
    "truncated token": lambda h: bearer_get(h, _valid_backend(h)[:-1]),
    "expired token": lambda h: bearer_get(h, stored_token(h, lifetime=60, issued_ago=120)),
    "wrong audience token": lambda h: bearer_get(
        h, stored_token(h, aud="https://other.example.org/fhir")),
    "alg none jwt": lambda h: bearer_get(h, unsigned_jwt(
        {"alg": "none", "typ": "JWT"},
        {"sub": "x", "scope": "system/*.cruds", "exp": time.time() + 300})),
    "hs256 signed with server public key": lambda h: bearer_get(h, hs256_jwt(
        {"alg": "HS256", "typ": "JWT"},
        {"iss": h.base, "scope": "system/*.cruds", "exp": int(time.time()) + 300},
        server_public_pem(h))),
    "rs256 jwt from attacker key": lambda h: bearer_get(h, jwt.encode(
        {"alg": "RS256", "kid": requests.get(f"{h.root}/auth/jwks").json()["keys"][0]["kid"]},
        {"iss": h.base, "scope": "system/*.cruds", "exp": int(time.time()) + 300},
        RSAKey.generate_key(2048, private=True), algorithms=["RS256"])),
    "id_token used as access token": lambda h: bearer_get(h, user_tokens(
        h, "launch/patient openid fhirUser patient/*.rs")["id_token"]),
    "refresh token used as access token": lambda h: bearer_get(h, user_tokens(h)["refresh_token"]),
    "oversized token": lambda h: bearer_get(h, "a" * 5000),
}


def _revoked(h: AuthHarness) -> requests.Response:
    token = _valid_backend(h)
    with h.db.read():
        pass
    requests.post(f"{h.root}/auth/revoke", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(h.keys.rsa, "backend-rs", h.token_url)}, timeout=30)
    return bearer_get(h, token)


BEARER_ATTACKS["revoked token"] = _revoked


@pytest.mark.parametrize("attack", sorted(BEARER_ATTACKS))
def test_bearer_attacks_get_401(h, attack):
    before = h.denials()
    r = BEARER_ATTACKS[attack](h)
    assert r.status_code == 401, r.text
    assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    assert r.json()["resourceType"] == "OperationOutcome"
    assert h.denials() > before


# ----------------------------------------------------------- client assertion attacks
def _pem_of_client_key(h: AuthHarness) -> bytes:
    return h.keys.rsa.as_pem(private=False)


def _claims(h: AuthHarness, **over: object) -> dict:
    return {"iss": "backend-rs", "sub": "backend-rs", "aud": h.token_url,
            "exp": int(time.time()) + 200, "jti": uuid.uuid4().hex, **over}


def _tampered(h: AuthHarness) -> str:
    head, _, sig = assertion(h.keys.rsa, "backend-rs", h.token_url).split(".")
    evil = b64(json.dumps(_claims(h, iss="backend-rs", sub="backend-rs",
                                  scope="system/*.cruds")).encode())
    return f"{head}.{evil}.{sig}"


ASSERTION_ATTACKS: dict[str, Callable[[AuthHarness], str]] = {
    "alg none": lambda h: unsigned_jwt({"alg": "none", "kid": "rs-1"}, _claims(h)),
    "hs256 with client public key": lambda h: hs256_jwt(
        {"alg": "HS256", "kid": "rs-1"}, _claims(h), _pem_of_client_key(h)),
    "rs256 not allowed": lambda h: jwt.encode(
        {"alg": "RS256", "kid": "rs-1"}, _claims(h), h.keys.rsa, algorithms=["RS256"]),
    "signed with another key, same kid": lambda h: assertion(
        h.keys.rsa_other, "backend-rs", h.token_url),
    "tampered payload": _tampered,
    "expired assertion": lambda h: assertion(h.keys.rsa, "backend-rs", h.token_url,
                                             lifetime=-120),
    "exp more than 5 minutes ahead": lambda h: assertion(h.keys.rsa, "backend-rs",
                                                         h.token_url, lifetime=3600),
    "wrong aud": lambda h: assertion(h.keys.rsa, "backend-rs", "https://evil.example/token"),
    "aud is the fhir base": lambda h: assertion(h.keys.rsa, "backend-rs", h.base),
    "missing jti": lambda h: jwt.encode(
        {"alg": "RS384", "kid": "rs-1"},
        {k: v for k, v in _claims(h).items() if k != "jti"}, h.keys.rsa,
        algorithms=["RS384"]),
    "iss differs from sub": lambda h: assertion(h.keys.rsa, "backend-rs", h.token_url,
                                                claims={"sub": "backend-es"}),
    "unknown client": lambda h: assertion(h.keys.rsa, "nobody", h.token_url),
    "jku not the registered url": lambda h: assertion(
        h.keys.rsa, "backend-rs", h.token_url,
        extra_header={"jku": "https://evil.example/jwks.json"}),
    "unknown kid": lambda h: assertion(h.keys.rsa, "backend-rs", h.token_url, kid="nope"),
    "es384 against an rsa kid": lambda h: assertion(h.keys.ec, "backend-rs", h.token_url,
                                                    alg="ES384", kid="rs-1"),
    "public client impersonating backend": lambda h: assertion(
        h.keys.rsa, "app-public", h.token_url),
    "not a jwt": lambda h: "not.a.jwt",
}


@pytest.mark.parametrize("attack", sorted(ASSERTION_ATTACKS))
def test_client_assertion_attacks(h, attack):
    before = h.denials()
    r = requests.post(h.token_url, data={
        "grant_type": "client_credentials", "scope": "system/Task.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": ASSERTION_ATTACKS[attack](h)}, timeout=30)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "invalid_client"
    assert "access_token" not in r.json()
    assert h.denials() > before


def test_replayed_jti_rejected(h):
    token = assertion(h.keys.rsa, "backend-rs", h.token_url)
    form = {"grant_type": "client_credentials", "scope": "system/Task.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": token}
    assert requests.post(h.token_url, data=form, timeout=30).status_code == 200
    before = h.denials()
    again = requests.post(h.token_url, data=form, timeout=30)
    assert again.status_code == 401 and "jti" in again.json()["error_description"]
    assert h.denials() > before


def test_jku_equal_to_registered_url_is_accepted(h):
    url = f"{h.root}/test/jwks/es"
    r = h.backend_token("backend-es", "system/Task.rs", extra_header={"jku": url})
    assert r.status_code == 200, r.text


TOKEN_REQUEST_ATTACKS: dict[str, tuple[Callable[[AuthHarness], dict], int, str]] = {
    "bad client_assertion_type": (lambda h: {
        "grant_type": "client_credentials", "scope": "system/Task.rs",
        "client_assertion_type": "urn:evil",
        "client_assertion": assertion(h.keys.rsa, "backend-rs", h.token_url)},
        400, "invalid_request"),
    "unsupported grant type": (lambda h: {"grant_type": "password", "username": "dr_a",
                                          "password": "x", "client_id": "app-public"},
                               400, "unsupported_grant_type"),
    "client_credentials by public client": (lambda h: {
        "grant_type": "client_credentials", "client_id": "app-public",
        "scope": "system/Task.rs"}, 400, "unauthorized_client"),
    "scope outside registration": (lambda h: {
        "grant_type": "client_credentials", "scope": "system/Observation.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(h.keys.rsa, "backend-rs", h.token_url)},
        400, "invalid_scope"),
    "patient scope through client_credentials": (lambda h: {
        "grant_type": "client_credentials", "scope": "patient/*.rs",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(h.keys.rsa, "backend-rs", h.token_url)},
        400, "invalid_scope"),
    "client_id differs from assertion": (lambda h: {
        "grant_type": "client_credentials", "scope": "system/Task.rs",
        "client_id": "backend-es", "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(h.keys.rsa, "backend-rs", h.token_url)},
        401, "invalid_client"),
    "confidential client without secret": (lambda h: {
        "grant_type": "authorization_code", "code": "x", "client_id": "app-secret",
        "redirect_uri": REDIRECT, "code_verifier": "v" * 50}, 401, "invalid_client"),
    "wrong client secret": (lambda h: {
        "grant_type": "authorization_code", "code": "x", "client_id": "app-secret",
        "client_secret": "wrong", "redirect_uri": REDIRECT, "code_verifier": "v" * 50},
        401, "invalid_client"),
    "unknown authorization code": (lambda h: {
        "grant_type": "authorization_code", "code": "forged", "client_id": "app-public",
        "redirect_uri": REDIRECT, "code_verifier": "v" * 50}, 400, "invalid_grant"),
    "sql-ish client id": (lambda h: {
        "grant_type": "authorization_code", "code": "x", "client_id": "' OR 1=1 --",
        "redirect_uri": REDIRECT, "code_verifier": "v" * 50}, 401, "invalid_client"),
}


@pytest.mark.parametrize("attack", sorted(TOKEN_REQUEST_ATTACKS))
def test_token_request_attacks(h, attack):
    build, status, error = TOKEN_REQUEST_ATTACKS[attack]
    before = h.denials()
    r = requests.post(h.token_url, data=build(h), timeout=30)
    assert (r.status_code, r.json()["error"]) == (status, error), r.text
    assert r.headers["Cache-Control"] == "no-store"
    assert h.denials() > before


# ------------------------------------------------------------ authorize / PKCE attacks
def _authorize(h: AuthHarness, **changes: str | None) -> requests.Response:
    params, _ = h.authorize_params()
    for key, value in changes.items():
        if value is None:
            params.pop(key, None)
        else:
            params[key] = value
    return h.browser().get(f"{h.root}/auth/authorize", params=params, allow_redirects=False,
                           timeout=30)


AUTHORIZE_ATTACKS: dict[str, dict[str, str | None]] = {
    "pkce plain": {"code_challenge_method": "plain", "code_challenge": "x" * 50},
    "pkce method missing": {"code_challenge_method": None},
    "pkce challenge missing": {"code_challenge": None},
    "pkce challenge malformed": {"code_challenge": "short"},
    "wrong aud": {"aud": "https://evil.example/fhir"},
    "aud missing": {"aud": None},
    "response_type token": {"response_type": "token"},
    "state missing": {"state": None},
    "launch scope without launch": {"scope": "launch patient/*.rs"},
    "forged launch handle": {"scope": "launch patient/*.rs", "launch": "deadbeef"},
    "only unregistered scopes": {"scope": "system/*.cruds"},
}


@pytest.mark.parametrize("attack", sorted(AUTHORIZE_ATTACKS))
def test_authorize_attacks_redirect_with_error(h, attack):
    before = h.denials()
    r = _authorize(h, **AUTHORIZE_ATTACKS[attack])
    assert r.status_code == 302
    assert r.headers["Location"].startswith(REDIRECT + "?error=")
    assert "code=" not in r.headers["Location"]
    assert h.denials() > before


@pytest.mark.parametrize("changes", [
    {"redirect_uri": "https://evil.example/cb"}, {"client_id": "nobody"},
], ids=["unregistered redirect_uri", "unknown client"])
def test_authorize_never_redirects_to_untrusted_uri(h, changes):
    before = h.denials()
    r = _authorize(h, **changes)
    assert r.status_code == 400 and "Location" not in r.headers
    assert h.denials() > before


def _code(h: AuthHarness, client_id: str = "app-public") -> tuple[str, str]:
    params, verifier = h.authorize_params(client_id=client_id)
    location = h.approve(h.browser(), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params))
    return code_from(location), verifier


def _exchange(h: AuthHarness, code: str, verifier: str | None, **over: str) -> requests.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "app-public", **over}
    if verifier is not None:
        data["code_verifier"] = verifier
    return requests.post(h.token_url, data=data, timeout=30)


CODE_ATTACKS: dict[str, Callable[[AuthHarness, str, str], requests.Response]] = {
    "missing verifier": lambda h, c, v: _exchange(h, c, None),
    "wrong verifier": lambda h, c, v: _exchange(h, c, secrets.token_urlsafe(48)),
    "plain downgrade: verifier = challenge": lambda h, c, v: _exchange(
        h, c, b64(hashlib.sha256(v.encode()).digest())),
    "redirect_uri mismatch": lambda h, c, v: _exchange(h, c, v,
                                                       redirect_uri="http://app.example/x"),
    "code stolen by another client": lambda h, c, v: _exchange(
        h, c, v, client_id="app-narrow"),
}


@pytest.mark.parametrize("attack", sorted(CODE_ATTACKS))
def test_code_exchange_attacks(h, attack):
    code, verifier = _code(h)
    before = h.denials()
    r = CODE_ATTACKS[attack](h, code, verifier)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    assert h.denials() > before
    # a failed exchange burns the code: the legitimate verifier no longer works either
    assert _exchange(h, code, verifier).status_code == 400


def test_code_replay_revokes_issued_tokens(h):
    code, verifier = _code(h)
    first = _exchange(h, code, verifier)
    assert first.status_code == 200
    token = first.json()["access_token"]
    assert bearer_get(h, token).status_code == 200
    before = h.denials()
    assert _exchange(h, code, verifier).status_code == 400
    assert bearer_get(h, token).status_code == 401
    assert h.denials() > before


# ---------------------------------------------------------------------- refresh attacks
def test_refresh_scope_escalation_rejected(h):
    tokens = user_tokens(h)
    before = h.denials()
    r = requests.post(h.token_url, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": "app-public", "scope": "patient/*.cruds"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"
    assert h.denials() > before


def test_refresh_token_bound_to_client(h):
    tokens = user_tokens(h)
    before = h.denials()
    r = requests.post(h.token_url, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": "app-narrow"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    assert h.denials() > before


def test_rotated_refresh_token_cannot_be_reused(h):
    tokens = user_tokens(h)
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
            "client_id": "app-public"}
    assert requests.post(h.token_url, data=form, timeout=30).status_code == 200
    before = h.denials()
    again = requests.post(h.token_url, data=form, timeout=30)
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert h.denials() > before


# ------------------------------------------------------------- resource-level policy
def test_patient_token_cannot_read_other_patient(h):
    token = user_tokens(h, patient="pat1")["access_token"]
    for path in ("Patient/pat2", "Observation/o2"):
        before = h.denials()
        r = bearer_get(h, token, path)
        assert r.status_code == 404, r.text  # no existence leak
        assert h.denials() > before
    assert bearer_get(h, token, "Observation/o1").status_code == 200


def test_type_without_scope_is_403(h):
    token = h.backend_token(scope="system/Task.rs").json()["access_token"]
    before = h.denials()
    r = bearer_get(h, token, "Observation/o1")
    assert r.status_code == 403
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]
    assert "insufficient_scope" in r.json()["issue"][0]["diagnostics"]
    assert h.denials() > before


def test_write_scope_does_not_imply_read(h):
    tokens = user_tokens(h, scope="launch/patient user/Task.cu")
    assert tokens["scope"] == "launch/patient user/Task.cu"
    before = h.denials()
    assert bearer_get(h, tokens["access_token"], "Task/t1").status_code == 403
    assert h.denials() > before


def test_scope_escalation_at_authorize_is_clamped(h):
    tokens = user_tokens(h, scope="launch/patient patient/*.cruds system/*.cruds",
                         client_id="app-narrow")
    assert tokens["scope"] == "launch/patient patient/Patient.r"
    before = h.denials()
    assert bearer_get(h, tokens["access_token"], "Observation/o1").status_code == 403
    assert h.denials() > before


# --------------------------------------------------------- sessions, CSRF, launch
def test_wrong_password_is_denied_and_audited(h):
    before = h.denials()
    r = requests.post(f"{h.root}/auth/login", data={
        "username": "dr_a", "password": "guess", "next": "/auth/login"},
        allow_redirects=False, timeout=30)
    assert r.status_code == 401 and "Set-Cookie" not in r.headers
    assert h.denials() > before


def test_approval_csrf_mismatch(h):
    params, _ = h.authorize_params()
    browser = h.browser()
    r = browser.get(f"{h.root}/auth/authorize", params=params, allow_redirects=False)
    rid = r.headers["Location"].split("rid=")[1]
    before = h.denials()
    r = browser.post(f"{h.root}/auth/approve", data={
        "rid": rid, "csrf": "0" * 64, "decision": "approve", "q": "smith", "patient": "pat1"},
        allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "Location" not in r.headers
    assert h.denials() > before


def test_ehr_launch_hijacked_by_another_user(h):
    launch = h.browser("dr_a").get(f"{h.root}/auth/launch", params={
        "client_id": "app-public", "patient": "pat1"}, headers={"Accept": "application/json"},
        timeout=30).json()["launch"]
    params, _ = h.authorize_params(scope="launch patient/*.rs", launch=launch)
    before = h.denials()
    location = h.approve(h.browser("dr_b"), f"{h.root}/auth/authorize?" +
                         requests.compat.urlencode(params), patient_query=None)
    assert "error=access_denied" in location and "code=" not in location
    assert h.denials() > before


def test_launch_handle_of_another_client(h):
    launch = h.browser().get(f"{h.root}/auth/launch", params={
        "client_id": "app-secret", "patient": "pat1"}, headers={"Accept": "application/json"},
        timeout=30).json()["launch"]
    before = h.denials()
    r = _authorize(h, scope="launch patient/*.rs", launch=launch)
    assert "error=invalid_request" in r.headers["Location"]
    assert h.denials() > before


def test_login_next_is_not_an_open_redirect(h):
    r = requests.post(f"{h.root}/auth/login", data={
        "username": "dr_a", "password": "correct horse battery",
        "next": "//evil.example/x"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and r.headers["Location"] == "/auth/login"


def test_introspection_requires_authentication(h):
    token = _valid_backend(h)
    before = h.denials()
    r = requests.post(f"{h.root}/auth/introspect", data={"token": token}, timeout=30)
    assert r.status_code == 401 and "active" not in r.json()
    assert h.denials() > before


def test_revoking_another_clients_token_has_no_effect(h):
    token = _valid_backend(h)
    r = requests.post(f"{h.root}/auth/revoke", data={
        "token": token, "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion(h.keys.ec, "backend-es", h.token_url, alg="ES384")},
        timeout=30)
    assert r.status_code == 200  # RFC 7009: no information about the token
    assert bearer_get(h, token).status_code == 200


def test_logged_out_session_cannot_approve(h):
    browser = h.browser()
    params, _ = h.authorize_params()
    r = browser.get(f"{h.root}/auth/authorize", params=params, allow_redirects=False)
    continue_url = f"{h.root}{r.headers['Location']}"
    assert "Authorize application" in browser.get(continue_url, timeout=30).text
    browser.post(f"{h.root}/auth/logout", timeout=30)
    page = browser.get(continue_url, timeout=30)
    assert "Sign in" in page.text and "Authorize application" not in page.text


@pytest.mark.parametrize("params", [
    {"patient": "../../x"}, {"context": "javascript:alert(1)"}, {"context": "Patient/p2"},
], ids=["bad patient id", "bad context reference", "patient inside fhirContext"])
def test_launch_rejects_malformed_context(h, params):
    r = h.browser().get(f"{h.root}/auth/launch", params={"client_id": "app-public", **params},
                        allow_redirects=False, timeout=30)
    assert r.status_code == 400 and "Location" not in r.headers
