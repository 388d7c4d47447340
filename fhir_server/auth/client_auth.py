"""Client authentication at the token, introspection and revocation endpoints.

* public: `client_id` only (never allowed for a confidential client: no downgrade);
* confidential symmetric: HTTP Basic (`client_secret_basic`) or `client_secret_post`;
* confidential asymmetric: `private_key_jwt` per SMART (RFC 7523): RS384 or ES384 only,
  `iss` = `sub` = client_id, `aud` = the token endpoint URL, `exp` at most 5 minutes ahead,
  `jti` never reused for the same `iss`, SMART `jku` rule, exactly one key with the
  header `kid` and a `kty` fitting `alg`. Every failure is `invalid_client`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import requests
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Connection, bindparam, delete, insert
from sqlalchemy.exc import IntegrityError

from fhir_server.auth.auth_schema import used_jti
from fhir_server.auth.errors import OAuthError, invalid_client
from fhir_server.auth.passwords import verify_password
from fhir_server.auth.registry import Client, get_client
from fhir_server.storage.db import Database

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALG_KTY = {"RS384": "RSA", "ES384": "EC"}
MAX_ASSERTION_LIFETIME = 300
CLOCK_SKEW = 30


class JwksFetcher:
    """Fetches client JWKS URLs, caching no longer than the response's Cache-Control allows."""

    def __init__(self, timeout: float = 5.0) -> None:
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, url: str) -> dict[str, Any]:
        """The JWKS at `url` (OAuthError invalid_client when unreachable or malformed)."""
        now = time.time()
        with self._lock:
            hit = self._cache.get(url)
        if hit and hit[0] > now:
            return hit[1]
        try:
            resp = requests.get(url, timeout=self.timeout, headers={"Accept": "application/json"})
            resp.raise_for_status()
            jwks = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise invalid_client(f"Could not fetch the client's JWKS: {exc}") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise invalid_client("The client's JWKS URL did not return a JWK Set")
        ttl = cache_seconds(resp.headers.get("Cache-Control", ""))
        if ttl > 0:
            with self._lock:
                self._cache[url] = (now + ttl, jwks)
        return jwks


def cache_seconds(cache_control: str) -> int:
    """Seconds a response may be cached per its Cache-Control (0: not at all)."""
    value = cache_control.lower()
    if "no-store" in value or "no-cache" in value:
        return 0
    m = re.search(r"max-age\s*=\s*(\d+)", value)
    return min(int(m.group(1)), 3600) if m else 0


def _b64json(part: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise invalid_client("client_assertion is not a JWT") from exc
    if not isinstance(data, dict):
        raise invalid_client("client_assertion is not a JWT")
    return data


def _select_key(jwks: dict[str, Any], kid: str, alg: str) -> KeySet:
    candidates = [
        k for k in jwks.get("keys", [])
        if isinstance(k, dict) and k.get("kid") == kid and k.get("kty") == ALG_KTY[alg]
        and k.get("alg", alg) == alg
    ]
    if len(candidates) != 1:
        raise invalid_client(f"Expected exactly one {ALG_KTY[alg]} key with kid {kid!r}")
    try:
        return _import_key(json.dumps(candidates[0], sort_keys=True))
    except (JoseError, ValueError, TypeError) as exc:
        raise invalid_client("The client's key could not be imported") from exc


@lru_cache(maxsize=512)
def _import_key(jwk_json: str) -> KeySet:
    """Parsed public key (cached by its exact JSON: importing RSA keys is slow)."""
    return KeySet.import_key_set({"keys": [json.loads(jwk_json)]})


JtiRecord = tuple[str, str, int]  # (iss, jti, exp)


def verify_assertion(
    db: Database, assertion: str, token_url: str, fetcher: JwksFetcher,
    defer_jti: list[JtiRecord] | None = None,
) -> Client:
    """Verify a SMART private_key_jwt client assertion and return its client.

    The `jti` is recorded at once, or, when `defer_jti` is a list, appended to it for the
    caller to record with `remember_jti` inside its own write transaction.
    """
    parts = assertion.split(".")
    if len(parts) != 3:
        raise invalid_client("client_assertion is not a compact JWS")
    header, claims = _b64json(parts[0]), _b64json(parts[1])
    alg = header.get("alg")
    if alg not in ALG_KTY:
        raise invalid_client(f"client_assertion alg must be RS384 or ES384, not {alg!r}")
    iss, sub = claims.get("iss"), claims.get("sub")
    if not isinstance(iss, str) or iss != sub:
        raise invalid_client("client_assertion iss and sub must both equal the client_id")
    with db.read() as conn:
        client = get_client(conn, iss)
    if client is None or client.kind != "asymmetric":
        raise invalid_client("Unknown client or client not registered for private_key_jwt")
    jku = header.get("jku")
    if jku is not None and jku != client.jwks_url:
        raise invalid_client("jku does not match the client's registered JWKS URL")
    if client.jwks_url:
        jwks = fetcher.get(client.jwks_url)
    else:
        jwks = client.jwks or {"keys": []}
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise invalid_client("client_assertion header has no kid")
    keys = _select_key(jwks, kid, alg)
    try:
        token = jwt.decode(assertion, keys, algorithms=[alg])
    except (JoseError, ValueError) as exc:
        raise invalid_client(f"client_assertion signature is invalid: {exc}") from exc
    _check_claims(token.claims, token_url)
    record = (iss, token.claims["jti"], int(token.claims["exp"]))
    if defer_jti is not None:
        defer_jti.append(record)
    else:
        with _jti_errors(), db.write() as conn:
            remember_jti(conn, record)
    return client


def _check_claims(claims: dict[str, Any], token_url: str) -> None:
    now = time.time()
    aud = claims.get("aud")
    auds = aud if isinstance(aud, list) else [aud]
    if token_url not in auds:
        raise invalid_client("client_assertion aud must be the token endpoint URL")
    exp = claims.get("exp")
    if not isinstance(exp, int | float):
        raise invalid_client("client_assertion has no exp")
    if exp <= now - CLOCK_SKEW:
        raise invalid_client("client_assertion has expired")
    if exp > now + MAX_ASSERTION_LIFETIME + CLOCK_SKEW:
        raise invalid_client("client_assertion exp is more than 5 minutes in the future")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf > now + CLOCK_SKEW:
        raise invalid_client("client_assertion is not yet valid")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise invalid_client("client_assertion needs a jti")


_INSERT_JTI = insert(used_jti)
_PURGE_JTI = delete(used_jti).where(used_jti.c.expires < bindparam("now"))
_last_purge = [0.0]


def remember_jti(conn: Connection, record: JtiRecord) -> None:
    """Record (iss, jti) until the assertion expires (IntegrityError when already used:
    wrap the transaction in `_jti_errors()`)."""
    iss, jti, exp = record
    now = time.time()
    if now - _last_purge[0] > 60:  # expired entries are purged once a minute
        _last_purge[0] = now
        conn.execute(_PURGE_JTI, {"now": int(now) - CLOCK_SKEW})
    conn.execute(_INSERT_JTI, {"iss": iss, "jti": jti, "expires": exp + CLOCK_SKEW})


@contextmanager
def _jti_errors() -> Iterator[None]:
    """Turn the unique-key violation of a reused jti into `invalid_client`."""
    try:
        yield
    except IntegrityError as exc:
        raise invalid_client("client_assertion jti has already been used") from exc


jti_errors = _jti_errors


def _basic(headers: Mapping[str, str]) -> tuple[str, str] | None:
    raw = headers.get("Authorization") or ""
    scheme, _, value = raw.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, pwd = base64.b64decode(value.strip()).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise invalid_client("Malformed HTTP Basic credentials") from exc
    if not sep:
        raise invalid_client("Malformed HTTP Basic credentials")
    return unquote(user), unquote(pwd)


def authenticate_client(
    db: Database,
    form: Mapping[str, str],
    headers: Mapping[str, str],
    token_url: str,
    fetcher: JwksFetcher,
    defer_jti: list[JtiRecord] | None = None,
) -> Client:
    """Authenticate the calling client by the method it is registered for (OAuthError).

    `defer_jti`: see `verify_assertion`."""
    assertion = form.get("client_assertion")
    assertion_type = form.get("client_assertion_type")
    if assertion or assertion_type:
        if assertion_type != ASSERTION_TYPE:
            raise OAuthError("invalid_request", "Unsupported client_assertion_type", 400)
        if not assertion:
            raise invalid_client("client_assertion is missing")
        client = verify_assertion(db, assertion, token_url, fetcher, defer_jti)
        if form.get("client_id") not in (None, "", client.client_id):
            raise invalid_client("client_id does not match the client_assertion")
        return client
    basic = _basic(headers)
    if basic is not None:
        client_id, secret = basic
    else:
        client_id, secret = form.get("client_id") or "", form.get("client_secret")
    if not client_id:
        raise invalid_client("Client authentication is required")
    with db.read() as conn:
        client = get_client(conn, client_id)
    if client is None:
        verify_password(secret or "", None)  # same cost as a real check
        raise invalid_client("Unknown client")
    if client.kind == "public":
        if secret:
            raise invalid_client("A public client must not send a secret")
        return client
    if client.kind == "symmetric":
        if secret and verify_password(secret, client.secret_hash):
            return client
        raise invalid_client("Client secret missing or wrong")
    raise invalid_client("This client must authenticate with private_key_jwt")
