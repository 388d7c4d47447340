"""Server signing keys (RS256, for id_tokens): generated at first start, stored in the database.

The private key lives only in `auth_signing_keys` (never in the repository). The public
half is served as a bare JWKS at `/auth/jwks`. Rotation: insert a new active key and mark
the old one inactive; the JWKS keeps publishing inactive keys so issued id_tokens verify.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass

from joserfc.jwk import RSAKey
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from fhir_server.auth.auth_schema import signing_keys
from fhir_server.storage.db import Database


@dataclass(frozen=True)
class ServerKeys:
    """The active signing key and every published public key."""

    active: RSAKey
    public: tuple[RSAKey, ...]

    def jwks(self) -> dict:
        """Bare public JWKS (`kty`, `kid`, `n`, `e`, `alg`, `use`)."""
        keys = []
        for key in self.public:
            data = key.as_dict(private=False)
            data.update({"alg": "RS256", "use": "sig"})
            keys.append(data)
        return {"keys": keys}


_cache: dict[str, ServerKeys] = {}
_lock = threading.Lock()


def load_keys(db: Database) -> ServerKeys:
    """The server keys, creating an RS256 key pair on first use (race-safe across processes)."""
    cache_key = str(db.url)
    cached = _cache.get(cache_key)
    if cached is not None:
        return cached
    with _lock:
        keys = _read(db) or _create(db)
        _cache[cache_key] = keys
        return keys


def _read(db: Database) -> ServerKeys | None:
    with db.read() as conn:
        rows = conn.execute(select(signing_keys).order_by(signing_keys.c.created)).all()
    if not rows:
        return None
    public = tuple(RSAKey.import_key(json.loads(r.private_jwk)) for r in rows)
    active = [k for k, r in zip(public, rows, strict=True) if r.active]
    return ServerKeys(active=(active or list(public))[-1], public=public)


def _create(db: Database) -> ServerKeys:
    kid = secrets.token_hex(8)
    key = RSAKey.generate_key(2048, parameters={"kid": kid}, private=True)
    try:
        with db.write() as conn:
            conn.execute(
                insert(signing_keys).values(
                    kid=kid,
                    private_jwk=json.dumps(key.as_dict(private=True)),
                    created=int(time.time()),
                    active=True,
                )
            )
    except IntegrityError:  # pragma: no cover - another process won the race with its kid
        pass
    keys = _read(db)
    assert keys is not None
    return keys


def forget_cached_keys() -> None:
    """Drop the in-process key cache (after a rotation, or between tests)."""
    with _lock:
        _cache.clear()
