"""The apps' SMART App Launch client: discovery, the authorization request (PKCE S256,
`state`, `aud`), the code exchange, refresh, revocation and the id_token check.

The same code signs users in at this server (the hub) and runs EHR launches against external
EHRs; only the transport differs (`transport.InProcess` or `transport.OverHttp`). Nothing is
stored here: the caller seals `Pending` into a cookie and `Tokens` into the session.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhir_server.web.transport import Transport, Unreachable

FORM = "application/x-www-form-urlencoded"


class LaunchError(Exception):
    """A sign-in or launch failure shown to the user: `status` 400 (the request was wrong)
    or 502 (the other server failed); `server` names it."""

    def __init__(self, status: int, message: str, server: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.server = server


@dataclass(frozen=True)
class Endpoints:
    """What `{iss}/.well-known/smart-configuration` says."""

    iss: str
    authorize: str
    token: str
    revoke: str = ""
    jwks_uri: str = ""
    issuer: str = ""


@dataclass
class Pending:
    """An authorization request waiting for its callback (sealed into a cookie)."""

    kind: str  # "hub" (this app's own API server) or "ehr" (an external EHR)
    iss: str
    client_id: str
    state: str
    verifier: str
    redirect_uri: str
    token_url: str
    jwks_uri: str = ""
    issuer: str = ""
    return_to: str = ""
    created: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pending:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass
class Tokens:
    """A token response, reduced to what the app keeps."""

    access_token: str
    expires_at: float
    scope: str = ""
    refresh_token: str = ""
    patient: str = ""
    fhir_user: str = ""  # from a verified id_token
    username: str = ""
    need_patient_banner: bool = False

    def expired(self, margin: float = 30.0) -> bool:
        return time.time() > self.expires_at - margin

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def _json(transport: Transport, method: str, url: str, server: str,
          form: dict[str, str] | None = None, headers: dict[str, str] | None = None
          ) -> tuple[int, Any]:
    hdrs = {"Accept": "application/json", **(headers or {})}
    body = None
    if form is not None:
        hdrs["Content-Type"] = FORM
        body = urlencode(form).encode()
    try:
        reply = transport.send(method, url, hdrs, body)
    except Unreachable as exc:
        raise LaunchError(502, f"{server} could not be reached ({exc.why})", server) from None
    try:
        return reply.status, orjson.loads(reply.body) if reply.body else None
    except orjson.JSONDecodeError:
        return reply.status, None


def check_absolute_http(url: str, what: str) -> str:
    """`url` if it is an absolute http(s) URL with a host, else LaunchError 400."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise LaunchError(400, f"{what} must be an absolute http(s) URL, got {url!r}")
    return url


def discover(transport: Transport, iss: str) -> Endpoints:
    """The SMART configuration of `iss`; it must offer the code flow with PKCE S256."""
    url = iss.rstrip("/") + "/.well-known/smart-configuration"
    where = f"The server at {iss}"
    status, conf = _json(transport, "GET", url, where)
    if status != 200:
        raise LaunchError(502, f"SMART discovery at {url} failed with HTTP {status}", iss)
    if not isinstance(conf, dict):
        raise LaunchError(502, f"SMART discovery at {url} did not return a JSON object", iss)
    for name in ("authorization_endpoint", "token_endpoint"):
        value = conf.get(name)
        try:
            check_absolute_http(value if isinstance(value, str) else "", name)
        except LaunchError:
            raise LaunchError(502, f"SMART discovery gave no usable {name}", iss) from None
    if "S256" not in (conf.get("code_challenge_methods_supported") or []):
        raise LaunchError(502, "The server does not support PKCE S256 "
                               "(code_challenge_methods_supported)", iss)
    return Endpoints(iss=iss.rstrip("/"), authorize=conf["authorization_endpoint"],
                     token=conf["token_endpoint"],
                     revoke=str(conf.get("revocation_endpoint") or ""),
                     jwks_uri=str(conf.get("jwks_uri") or ""),
                     issuer=str(conf.get("issuer") or ""))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def begin(endpoints: Endpoints, kind: str, client_id: str, redirect_uri: str, scope: str,
          launch: str | None = None, return_to: str = "") -> tuple[str, Pending]:
    """The authorization URL to send the browser to, and the state to keep until the
    callback."""
    pending = Pending(kind=kind, iss=endpoints.iss, client_id=client_id,
                      state=secrets.token_urlsafe(32), verifier=secrets.token_urlsafe(48),
                      redirect_uri=redirect_uri, token_url=endpoints.token,
                      jwks_uri=endpoints.jwks_uri, issuer=endpoints.issuer,
                      return_to=return_to, created=time.time())
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
              "scope": scope, "state": pending.state, "aud": endpoints.iss,
              "code_challenge": s256(pending.verifier), "code_challenge_method": "S256"}
    if launch:
        params["launch"] = launch
    sep = "&" if "?" in endpoints.authorize else "?"
    return endpoints.authorize + sep + urlencode(params), pending


def _client_auth(client_id: str, secret: str | None, form: dict[str, str]
                 ) -> dict[str, str]:
    if not secret:
        form["client_id"] = client_id
        return {}
    pair = f"{client_id}:{secret}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


def exchange(transport: Transport, pending: Pending, code: str, server: str,
             secret: str | None = None) -> tuple[Tokens, dict[str, Any]]:
    """Exchange the authorization code (with the PKCE verifier) for tokens; returns the
    kept tokens and the whole token response."""
    form = {"grant_type": "authorization_code", "code": code,
            "redirect_uri": pending.redirect_uri, "code_verifier": pending.verifier}
    headers = _client_auth(pending.client_id, secret, form)
    status, body = _json(transport, "POST", pending.token_url, server, form, headers)
    if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
        detail = body.get("error_description") or body.get("error") \
            if isinstance(body, dict) else None
        raise LaunchError(502, f"The token exchange with {server} failed "
                               f"(HTTP {status}{': ' + str(detail) if detail else ''})",
                          pending.iss)
    return _tokens(body), body


def refresh(transport: Transport, token_url: str, client_id: str, tokens: Tokens,
            secret: str | None = None) -> Tokens | None:
    """New tokens from the refresh token, or None when it is refused or absent."""
    if not tokens.refresh_token:
        return None
    form = {"grant_type": "refresh_token", "refresh_token": tokens.refresh_token}
    headers = _client_auth(client_id, secret, form)
    try:
        status, body = _json(transport, "POST", token_url, "the sign-in server", form,
                             headers)
    except LaunchError:
        return None
    if status != 200 or not isinstance(body, dict) or not body.get("access_token"):
        return None
    fresh = _tokens(body)
    fresh.fhir_user, fresh.username = tokens.fhir_user, tokens.username
    fresh.patient = fresh.patient or tokens.patient
    fresh.refresh_token = fresh.refresh_token or tokens.refresh_token
    return fresh


def revoke(transport: Transport, revoke_url: str, client_id: str, token: str) -> None:
    """Best-effort RFC 7009 revocation (sign-out); failures are ignored."""
    if not revoke_url or not token:
        return
    try:
        _json(transport, "POST", revoke_url, "the sign-in server",
              {"token": token, "client_id": client_id})
    except LaunchError:
        pass


def _tokens(body: dict[str, Any]) -> Tokens:
    expires_in = body.get("expires_in")
    lifetime = float(expires_in) if isinstance(expires_in, int | float) else 300.0
    return Tokens(access_token=str(body["access_token"]), expires_at=time.time() + lifetime,
                  scope=str(body.get("scope") or ""),
                  refresh_token=str(body.get("refresh_token") or ""),
                  patient=str(body.get("patient") or ""),
                  need_patient_banner=bool(body.get("need_patient_banner")))


def verified_claims(transport: Transport, pending: Pending, id_token: str,
                    server: str) -> dict[str, Any]:
    """The claims of an RS256 id_token signed by the server's `jwks_uri` key, issued by it,
    for this client and not expired; LaunchError 502 otherwise."""
    if not pending.jwks_uri:
        raise LaunchError(502, f"{server} published no jwks_uri to check its id_token",
                          pending.iss)
    status, keys = _json(transport, "GET", pending.jwks_uri, server)
    try:
        if status != 200 or not isinstance(keys, dict):
            raise ValueError(f"HTTP {status}")
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=["RS256"])
    except (ValueError, JoseError) as exc:
        raise LaunchError(502, f"The id_token of {server} could not be verified "
                               f"({type(exc).__name__})", pending.iss) from None
    claims = token.claims
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    issuer = pending.issuer or pending.iss
    if (claims.get("iss") != issuer or pending.client_id not in audiences
            or int(claims.get("exp") or 0) < time.time()):
        raise LaunchError(502, f"The id_token of {server} is not for this app, issuer or "
                               "time", pending.iss)
    return claims


def relative_fhir_user(fhir_user: str, iss: str) -> str:
    """`Practitioner/x` for a fhirUser URL on `iss` (or already relative); else ''."""
    base = iss.rstrip("/") + "/"
    if fhir_user.startswith(base):
        return fhir_user[len(base):]
    return fhir_user if fhir_user and not fhir_user.startswith(("http:", "https:")) else ""
