"""Client-side helpers for operators and demos: generate a Backend Services key pair and
fetch an access token with it (`python -m fhir_server clients keygen|token`)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from fhir_server.auth.client_auth import ASSERTION_TYPE
from fhir_server.auth.tokens import BACKEND_LIFETIME


def generate_key_pair(private_path: Path, public_path: Path, alg: str = "RS384") -> str:
    """Write a private JWK (mode 0600) and the public JWKS to register; returns the kid."""
    kid = uuid.uuid4().hex[:16]
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "RS384":
        key: Any = RSAKey.generate_key(2048, parameters=params, private=True)
    elif alg == "ES384":
        key = ECKey.generate_key("P-384", parameters=params, private=True)
    else:
        raise ValueError("alg must be RS384 or ES384")
    private_path.touch(mode=0o600)
    private_path.write_text(json.dumps(key.as_dict(private=True)))
    public_path.write_text(json.dumps({"keys": [key.as_dict(private=False)]}, indent=2))
    return kid


def client_assertion(private_jwk: dict[str, Any], client_id: str, token_url: str) -> str:
    """A fresh SMART client assertion (exp 4 minutes, new jti)."""
    key: Any = RSAKey.import_key(private_jwk) if private_jwk["kty"] == "RSA" else (
        ECKey.import_key(private_jwk))
    alg = "RS384" if private_jwk["kty"] == "RSA" else "ES384"
    claims = {"iss": client_id, "sub": client_id, "aud": token_url,
              "exp": int(time.time()) + 240, "jti": uuid.uuid4().hex}
    header = {"alg": alg, "kid": private_jwk["kid"], "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=[alg])


def fetch_token(private_path: Path, client_id: str, token_url: str, scope: str) -> dict:
    """Run the client_credentials grant against `token_url`; returns the token response."""
    private_jwk = json.loads(private_path.read_text())
    resp = requests.post(token_url, data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(private_jwk, client_id, token_url),
    }, timeout=30)
    body = resp.json()
    if resp.status_code != 200:
        raise RuntimeError(f"token request failed ({resp.status_code}): {body}")
    return body


def token_help(base_url: str, client_id: str, key_file: str, scope: str) -> str:
    """The text `make run` prints: how to get a token for a demo client."""
    root = base_url.rstrip("/").rsplit("/fhir", 1)[0]
    return (
        f"Get a Backend Services token for demo client '{client_id}':\n"
        f"  TOKEN=$(.venv/bin/python -m fhir_server clients token --client-id {client_id}"
        f" --key-file {key_file} --token-url {root}/auth/token --scope \"{scope}\""
        " | .venv/bin/python -c"
        " 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')\n"
        f"  curl -H \"Authorization: Bearer $TOKEN\" {base_url.rstrip('/')}/Task\n"
        f"  (the token lasts {BACKEND_LIFETIME // 60} minutes, as SMART Backend Services "
        "recommends; when the API answers 401 invalid_token, run the first command again)"
    )
