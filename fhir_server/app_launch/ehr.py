"""Talking to the launching EHR with `fhirclient`: discovery, the authorize URL (PKCE S256,
`aud=iss`), the code exchange, the reads and the ServiceRequest write.

fhirclient 4.4.0 sends PKCE S256 itself (`FHIROAuth2Auth._authorize_params`) and keeps the
verifier in its state; we only supply the endpoints, found through
`{iss}/.well-known/smart-configuration` rather than fhirclient's CapabilityStatement route.
Every failure is an `EhrError` carrying the HTTP status our page answers with.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from fhirclient import client as fhirclient
from fhirclient.auth import FHIRAuth
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from requests.adapters import HTTPAdapter

from fhir_server.app_launch.config import AppConfig

LOINC = "http://loinc.org"
PHQ9_TOTAL = "44261-6"
GAD7_TOTAL = "70274-6"
_SECRET_KEYS = ("app_secret",)


class EhrError(Exception):
    """A launch failure shown to the user: `status` 400 (bad request) or 502 (EHR side)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _TimeoutAdapter(HTTPAdapter):
    """Gives every request of fhirclient's session a timeout (it sets none itself)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["timeout"] = kwargs.get("timeout") or self.timeout
        return super().send(request, **kwargs)


def check_absolute_http(url: str, what: str) -> str:
    """`url` if it is an absolute http(s) URL with a host, else EhrError 400."""
    parts = urlsplit(url or "")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise EhrError(400, f"{what} must be an absolute http(s) URL, got {url!r}")
    return url


def discover(iss: str, timeout: float) -> dict[str, Any]:
    """The EHR's SMART configuration; it must offer an EHR launch with PKCE S256."""
    url = iss.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = requests.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    except requests.RequestException as exc:
        raise EhrError(502, f"The EHR at {iss} could not be reached "
                            f"({type(exc).__name__})") from None
    if response.status_code != 200:
        raise EhrError(502, f"SMART discovery at {url} failed with HTTP "
                            f"{response.status_code}")
    try:
        conf = response.json()
    except ValueError:
        raise EhrError(502, f"SMART discovery at {url} did not return JSON") from None
    if not isinstance(conf, dict):
        raise EhrError(502, f"SMART discovery at {url} did not return a JSON object")
    for field in ("authorization_endpoint", "token_endpoint"):
        check_endpoint(conf.get(field), field)
    if "S256" not in (conf.get("code_challenge_methods_supported") or []):
        raise EhrError(502, "The EHR does not support PKCE S256 "
                            "(code_challenge_methods_supported)")
    return conf


def check_endpoint(url: Any, field: str) -> None:
    """An endpoint from discovery must be an absolute http(s) URL (else 502)."""
    try:
        check_absolute_http(url if isinstance(url, str) else "", field)
    except EhrError:
        raise EhrError(502, f"SMART discovery gave no usable {field}") from None


def start(config: AppConfig, iss: str, launch: str, redirect_uri: str,
          conf: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """Begin the authorization: returns (authorize URL, OAuth state, fhirclient state)."""
    smart = fhirclient.FHIRClient(settings={
        "app_id": config.client_id, "app_secret": config.client_secret, "api_base": iss,
        "redirect_uri": redirect_uri, "scope": config.scope, "launch_token": launch})
    smart.server.auth = FHIRAuth.create("oauth2", state={
        "aud": iss, "app_id": config.client_id, "app_secret": config.client_secret,
        "redirect_uri": redirect_uri, "authorize_uri": conf["authorization_endpoint"],
        "token_uri": conf["token_endpoint"]})
    url = smart.authorize_url
    state = smart.server.auth.auth_state
    return url, state, _without_secret({**smart.state, "discovery": _keep(conf)})


def _keep(conf: dict[str, Any]) -> dict[str, Any]:
    return {k: conf[k] for k in ("jwks_uri", "issuer", "token_endpoint") if k in conf}


def restore(config: AppConfig, stored: dict[str, Any]) -> fhirclient.FHIRClient:
    """A fhirclient from stored state, with our secret and a timeout on every call."""
    state = {k: v for k, v in stored.items() if k != "discovery"}
    state["app_secret"] = config.client_secret
    server = dict(state.get("server") or {})
    server["auth"] = {**(server.get("auth") or {}), "app_secret": config.client_secret}
    state["server"] = server
    smart = fhirclient.FHIRClient(state=state)
    adapter = _TimeoutAdapter(config.timeout)
    smart.server.session.mount("http://", adapter)
    smart.server.session.mount("https://", adapter)
    return smart


def state_of(smart: fhirclient.FHIRClient, stored: dict[str, Any]) -> dict[str, Any]:
    """The client's state to store again (without the secret)."""
    return _without_secret({**smart.state, "discovery": stored.get("discovery", {})})


def _without_secret(state: dict[str, Any]) -> dict[str, Any]:
    state = {k: v for k, v in state.items() if k not in _SECRET_KEYS}
    server = state.get("server")
    if isinstance(server, dict) and isinstance(server.get("auth"), dict):
        auth = {k: v for k, v in server["auth"].items() if k not in _SECRET_KEYS}
        state["server"] = {**server, "auth": auth}
    return state


def exchange(smart: fhirclient.FHIRClient, callback_url: str) -> None:
    """Check the callback and exchange its code (with the PKCE verifier) for a token."""
    try:
        smart.handle_callback(callback_url)
    except Exception as exc:  # fhirclient raises bare Exceptions for protocol errors
        detail = _why(exc) if hasattr(exc, "response") else str(exc)[:200]
        raise EhrError(502, f"The token exchange with the EHR failed ({detail})") from None
    if not smart.patient_id:
        raise EhrError(502, "The EHR granted no patient context for this launch")


def _why(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None:
        return f"HTTP {response.status_code}"
    return type(exc).__name__


def read_json(smart: fhirclient.FHIRClient, path: str) -> dict[str, Any]:
    """GET a FHIR path on the EHR with the launch's token; EhrError 502 on any failure."""
    try:
        body = smart.server.request_json(path)
    except Exception as exc:  # fhirclient's own exceptions, requests' errors, bad JSON
        status = getattr(getattr(exc, "response", None), "status_code", None)
        detail = f"HTTP {status}" if status else type(exc).__name__
        raise EhrError(502, f"Reading {path.split('?')[0]} from the EHR failed "
                            f"({detail})") from None
    if not isinstance(body, dict):
        raise EhrError(502, f"The EHR returned no resource for {path.split('?')[0]}")
    return body


def latest_observation(smart: fhirclient.FHIRClient, patient_id: str,
                       code: str) -> dict[str, Any] | None:
    """The most recent Observation with this LOINC code for the patient, or None."""
    query = urlencode({"patient": patient_id, "code": f"{LOINC}|{code}", "_sort": "-date",
                       "_count": "1"})
    bundle = read_json(smart, f"Observation?{query}")
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        if resource.get("resourceType") == "Observation" and (
                entry.get("search") or {}).get("mode", "match") == "match":
            return resource
    return None


def fhir_user(config: AppConfig, smart: fhirclient.FHIRClient, iss: str,
              stored: dict[str, Any]) -> str | None:
    """The `fhirUser` of a verified id_token (RS256, from the EHR's `jwks_uri`), if any."""
    id_token = (smart.launch_context or {}).get("id_token")
    jwks_uri = (stored.get("discovery") or {}).get("jwks_uri")
    if not id_token or not jwks_uri:
        return None
    try:
        keys = requests.get(jwks_uri, timeout=config.timeout).json()
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=["RS256"])
    except (requests.RequestException, ValueError, JoseError) as exc:
        raise EhrError(502, f"The EHR's id_token could not be verified "
                            f"({type(exc).__name__})") from None
    claims = token.claims
    issuer = (stored.get("discovery") or {}).get("issuer") or iss
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if (claims.get("iss") != issuer or config.client_id not in audiences
            or int(claims.get("exp") or 0) < time.time()):
        raise EhrError(502, "The EHR's id_token is not for this app, issuer or time")
    value = claims.get("fhirUser")
    return value if isinstance(value, str) else None


def create_service_request(smart: fhirclient.FHIRClient,
                           resource: dict[str, Any]) -> dict[str, Any]:
    """POST a ServiceRequest to the EHR; returns what the EHR stored."""
    try:
        response = smart.server.post_json("ServiceRequest", resource)
        body = response.json() if response.content else {}
    except Exception as exc:
        response = getattr(exc, "response", None)
        detail = _outcome_text(response) if response is not None else type(exc).__name__
        raise EhrError(502, f"The EHR refused the ServiceRequest ({detail})") from None
    if not isinstance(body, dict) or not body.get("id"):
        location = response.headers.get("Location", "")
        parts = location.split("/_history")[0].rstrip("/").split("/")
        body = {"resourceType": "ServiceRequest", "id": parts[-1] if location else None}
    return body


def _outcome_text(response: requests.Response) -> str:
    try:
        issues = response.json().get("issue") or []
        text = "; ".join(str(i.get("diagnostics", "")) for i in issues if i.get("diagnostics"))
    except (ValueError, AttributeError):
        text = ""
    return f"HTTP {response.status_code}" + (f": {text[:300]}" if text else "")
