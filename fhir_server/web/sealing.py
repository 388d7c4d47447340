"""Sealed cookies: JSON values encrypted and authenticated (Fernet: AES-128-CBC + HMAC-SHA256)
with a key kept in a file outside the database and outside the repository.

The key file is created on first use (mode 0600, 32 random bytes, base64url). Several server
processes or hosts must share the same file. Replacing the file signs everybody out.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken


class Sealer:
    """Seals and opens small JSON values with one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: Path) -> Sealer:
        """The sealer of the key in `path`, creating the file when it does not exist."""
        return cls(load_or_create_key(path))

    def seal(self, value: Any) -> str:
        """An opaque, URL-safe string holding `value` (JSON, compressed, encrypted)."""
        raw = json.dumps(value, separators=(",", ":")).encode()
        return self._fernet.encrypt(zlib.compress(raw)).decode()

    def open(self, sealed: str | None, max_age: int) -> Any | None:
        """The value sealed at most `max_age` seconds ago, else None (tampered, foreign key,
        expired or absent)."""
        if not sealed:
            return None
        try:
            raw = self._fernet.decrypt(sealed.encode(), ttl=max_age)
            return json.loads(zlib.decompress(raw))
        except (InvalidToken, zlib.error, ValueError):
            return None


def load_or_create_key(path: Path) -> bytes:
    """The key in `path`; a new one is written atomically (0600) when the file is missing."""
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    try:
        os.link(tmp, path)  # atomic: fails when another process created the key first
    except FileExistsError:
        key = path.read_bytes().strip()
    finally:
        tmp.unlink(missing_ok=True)
    return key
