"""An app's session: a sealed cookie bound to the SMART tokens of the signed-in user.

There is no server-side session table (the apps never touch the database): the cookie holds,
encrypted, the user's tokens at this app's API server (`hub`), optionally the tokens of an
external EHR that launched the app (`ehr`), who the user is, the CSRF value of the session and
small app data (a form to restore after a new sign-in). A session lives as long as its tokens
can be used or refreshed, at most `MAX_AGE`. Each app has its own cookie, scoped to its path.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from flask import Request, Response

from fhir_server.web.sealing import Sealer
from fhir_server.web.smart import Pending, Tokens

MAX_AGE = 12 * 3600  # the longest refresh lifetime of an online_access grant
PENDING_MAX_AGE = 600  # from the authorization request to its callback


@dataclass
class User:
    """Who is signed in, in words and references."""

    username: str = ""
    fhir_user: str = ""  # Practitioner/x on the API server
    name: str = ""
    role: str = ""  # PractitionerRole/x
    organization: str = ""  # Organization/x
    organization_name: str = ""
    roles: list[str] = field(default_factory=list)  # id_token `roles`: manager, administrator
    language: str = ""  # preferred page language (a patient's `communication`), if known
    birth_date: str = ""  # a patient's, for the patient banner

    @property
    def label(self) -> str:
        who = self.name or self.username or "Signed in"
        return f"{who}, {self.organization_name}" if self.organization_name else who


@dataclass
class WebSession:
    """The decoded session cookie."""

    sid: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    created: float = field(default_factory=time.time)
    hub: Tokens | None = None
    user: User = field(default_factory=User)
    ehr: dict[str, Any] | None = None  # iss, tokens, patient summary (external EHR launch)
    data: dict[str, Any] = field(default_factory=dict)
    changed: bool = False

    @property
    def signed_in(self) -> bool:
        return self.hub is not None

    def to_json(self) -> dict[str, Any]:
        return {"sid": self.sid, "csrf": self.csrf, "created": self.created,
                "hub": self.hub.to_json() if self.hub else None,
                "user": self.user.__dict__, "ehr": self.ehr, "data": self.data}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> WebSession:
        hub = raw.get("hub")
        return cls(sid=raw["sid"], csrf=raw["csrf"], created=raw["created"],
                   hub=Tokens.from_json(hub) if hub else None,
                   user=User(**raw.get("user") or {}), ehr=raw.get("ehr"),
                   data=raw.get("data") or {})


@dataclass(frozen=True)
class CookieJar:
    """Reads and writes one app's session and pending-authorization cookies."""

    app: str  # short app name: cookie names are mhr_<app> and mhr_<app>_auth
    path: str  # the app's URL prefix
    sealer: Sealer

    @property
    def session_name(self) -> str:
        return f"mhr_{self.app}"

    @property
    def pending_name(self) -> str:
        return f"mhr_{self.app}_auth"

    def load(self, request: Request) -> WebSession:
        """The session of this browser (a new, signed-out one when there is none)."""
        raw = self.sealer.open(request.cookies.get(self.session_name), MAX_AGE)
        if isinstance(raw, dict):
            try:
                return WebSession.from_json(raw)
            except (KeyError, TypeError):
                pass
        return WebSession()

    def save(self, response: Response, session: WebSession, secure: bool) -> None:
        response.set_cookie(self.session_name, self.sealer.seal(session.to_json()),
                            max_age=MAX_AGE, path=self.path, httponly=True, samesite="Lax",
                            secure=secure)

    def clear(self, response: Response) -> None:
        response.delete_cookie(self.session_name, path=self.path)

    def load_pending(self, request: Request) -> tuple[Pending, dict[str, Any]] | None:
        """The authorization request this browser started, and the form it carries."""
        raw = self.sealer.open(request.cookies.get(self.pending_name), PENDING_MAX_AGE)
        if not isinstance(raw, dict) or not isinstance(raw.get("pending"), dict):
            return None
        return Pending.from_json(raw["pending"]), raw.get("form") or {}

    def save_pending(self, response: Response, pending: Pending, form: dict[str, Any],
                     secure: bool) -> None:
        value = self.sealer.seal({"pending": pending.to_json(), "form": form})
        response.set_cookie(self.pending_name, value, max_age=PENDING_MAX_AGE,
                            path=self.path, httponly=True, samesite="Lax", secure=secure)

    def clear_pending(self, response: Response) -> None:
        response.delete_cookie(self.pending_name, path=self.path)
