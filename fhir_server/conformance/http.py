"""The kit's HTTP side: SMART Backend Services tokens and a recording FHIR client.

Every request goes through `FhirClient.request`, which records an `Exchange` (method, URL,
headers without the bearer token, body excerpts, status) into the current recorder, so a
failed test shows what was sent and what came back.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from fhir_server.conformance.model import Exchange

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
EXCERPT = 4000  # characters of each body kept in the reports


class KitError(Exception):
    """A problem with the kit's own set-up (bad key file, token refused): not a test result."""


def load_private_key(path: Path) -> tuple[Any, str, str]:
    """A private JWK (or a JWKS holding one) → (key, alg, kid). RSA signs RS384, EC ES384."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise KitError(f"cannot read the key file {path}: {exc}") from exc
    if "keys" in data:
        private = [k for k in data["keys"] if "d" in k]
        if len(private) != 1:
            raise KitError(f"{path} must hold exactly one private key")
        data = private[0]
    if "d" not in data:
        raise KitError(f"{path} holds a public key; the kit needs the private JWK")
    if data.get("kty") == "RSA":
        key: Any = RSAKey.import_key(data)
        alg = data.get("alg") or "RS384"
    elif data.get("kty") == "EC":
        key = ECKey.import_key(data)
        alg = data.get("alg") or "ES384"
    else:
        raise KitError(f"{path}: unsupported key type {data.get('kty')!r}")
    return key, alg, data.get("kid") or ""


class BackendServicesToken:
    """client_credentials grant with a signed client assertion (SMART Backend Services);
    the token is fetched when first needed and again shortly before it expires."""

    def __init__(self, client_id: str, key_file: Path, token_url: str, scope: str,
                 timeout: float = 30.0) -> None:
        self.client_id = client_id
        self.key, self.alg, self.kid = load_private_key(key_file)
        self.token_url = token_url
        self.scope = scope
        self.timeout = timeout
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def assertion(self) -> str:
        header = {"alg": self.alg, "typ": "JWT", **({"kid": self.kid} if self.kid else {})}
        claims = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                  "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
        return jwt.encode(header, claims, self.key, algorithms=[self.alg])

    def header(self, refresh: bool = False) -> str:
        with self._lock:
            if refresh or self._token is None or time.time() > self._expires - 30:
                self._fetch()
            return f"Bearer {self._token}"

    def _fetch(self) -> None:
        try:
            resp = requests.post(self.token_url, data={
                "grant_type": "client_credentials", "scope": self.scope,
                "client_assertion_type": ASSERTION_TYPE,
                "client_assertion": self.assertion()}, timeout=self.timeout)
        except requests.RequestException as exc:
            raise KitError(f"token endpoint {self.token_url} unreachable: {exc}") from exc
        if resp.status_code != 200:
            raise KitError(f"token request for client {self.client_id!r} refused "
                           f"({resp.status_code}): {resp.text[:300]}")
        body = resp.json()
        self._token = body["access_token"]
        self._expires = time.time() + float(body.get("expires_in") or 300)


@dataclass
class Response:
    """What a test sees of a response."""

    status: int
    headers: dict[str, str]
    text: str
    exchange: Exchange

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        try:
            return json.loads(self.text) if self.text else None
        except ValueError:
            return None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    @property
    def etag(self) -> str | None:
        return self.headers.get("etag")


Recorder = Callable[[Exchange], None]


class FhirClient:
    """A FHIR REST client for one party (one identity) against the server under test."""

    def __init__(self, base: str, party: str, auth: BackendServicesToken | None = None,
                 timeout: float = 30.0) -> None:
        self.base = base.rstrip("/")
        self.party = party
        self.auth = auth
        self.timeout = timeout
        self.session = requests.Session()
        self.recorders: list[Recorder] = []
        self.listeners: list[Callable[[Response], None]] = []  # every response, full text

    def url(self, path: str, params: dict[str, Any] | list[tuple[str, str]] | None = None) -> str:
        url = path if path.startswith(("http://", "https://")) else \
            f"{self.base}/{path.lstrip('/')}" if path else self.base
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params, doseq=True)
        return url

    def request(self, method: str, path: str, *, params: Any = None, json_body: Any = None,
                data: str | None = None, headers: dict[str, str] | None = None,
                accept: str = FHIR_JSON, authenticated: bool = True) -> Response:
        url = self.url(path, params)
        hdrs = {"Accept": accept, **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body)
            hdrs.setdefault("Content-Type", FHIR_JSON)
        for attempt in (0, 1):
            if self.auth is not None and authenticated:
                hdrs["Authorization"] = self.auth.header(refresh=attempt == 1)
            started = time.perf_counter()
            try:
                resp = self.session.request(method, url, data=data, headers=hdrs,
                                            timeout=self.timeout, allow_redirects=False)
            except requests.RequestException as exc:
                exchange = self._exchange(method, url, hdrs, data, None, {}, str(exc), started)
                raise ConnectionError(f"{method} {url}: {exc}") from exc
            text = resp.text
            exchange = self._exchange(method, url, hdrs, data, resp.status_code,
                                      dict(resp.headers), text, started)
            if resp.status_code == 401 and self.auth is not None and authenticated \
                    and attempt == 0:
                continue  # the token may have expired between check and use: once more
            response = Response(resp.status_code,
                                {k.lower(): v for k, v in resp.headers.items()}, text, exchange)
            for listener in list(self.listeners):
                listener(response)
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _exchange(self, method: str, url: str, headers: dict[str, str], body: str | None,
                  status: int | None, resp_headers: dict[str, str], text: str,
                  started: float) -> Exchange:
        shown = {k: ("Bearer <redacted>" if k.lower() == "authorization" else v)
                 for k, v in headers.items()}
        exchange = Exchange(method, url, shown, (body or "")[:EXCERPT], status,
                            {k: v for k, v in resp_headers.items()
                             if k.lower() in ("content-type", "etag", "location",
                                              "last-modified", "www-authenticate")},
                            text[:EXCERPT], (time.perf_counter() - started) * 1000, self.party)
        for record in list(self.recorders):
            record(exchange)
        return exchange

    # shorthands -------------------------------------------------------------------------
    def get(self, path: str, params: Any = None, **kw: Any) -> Response:
        return self.request("GET", path, params=params, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("POST", path, json_body=body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> Response:
        return self.request("PUT", path, json_body=body, **kw)

    def delete(self, path: str, **kw: Any) -> Response:
        return self.request("DELETE", path, **kw)


def bundle_resources(bundle: Any, mode: str | None = "match") -> list[dict[str, Any]]:
    """Resources of a searchset Bundle (`mode`: match, include, or None for all)."""
    if not isinstance(bundle, dict):
        return []
    out = []
    for entry in bundle.get("entry") or []:
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            continue
        entry_mode = (entry.get("search") or {}).get("mode", "match")
        if mode is None or entry_mode == mode:
            out.append(res)
    return out


def ref_of(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"
