"""Configuration of our SMART app (the EHR-launched referral app under `/app`).

Values come from `Settings.extra` (tests) first, then from the environment:

* `FHIR_SERVER_APP_CLIENT_ID` (`app_client_id`): our client_id at the EHR
  (default `mh-referral-app`).
* `FHIR_SERVER_APP_CLIENT_SECRET_FILE` (`app_client_secret`, the value itself): a file with
  the client secret; unset = a public client (PKCE only).
* `FHIR_SERVER_APP_REDIRECT_URI` (`app_redirect_uri`): default `<our host>/app/callback`.
* `FHIR_SERVER_APP_ALLOWED_ISS` (`app_allowed_iss`): comma-separated EHR FHIR bases we accept
  as `iss`.
* `FHIR_SERVER_APP_SCOPE` (`app_scope`): the scopes requested besides `launch`.
* `FHIR_SERVER_APP_TIMEOUT` (`app_timeout`): seconds for each call to the EHR (default 10).

An empty allow-list accepts any `iss` **only** when the server runs in development
(`FHIR_SERVER_AUTH=off`); with auth on, an empty allow-list refuses every launch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fhir_server.config import Settings

DEFAULT_CLIENT_ID = "mh-referral-app"
DEFAULT_SCOPE = ("openid fhirUser patient/Patient.rs patient/Observation.rs "
                 "patient/ServiceRequest.cr")


@dataclass(frozen=True)
class AppConfig:
    """How our app talks to EHRs."""

    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str | None = None
    redirect_uri: str = ""  # empty: <request host>/app/callback
    allowed_iss: tuple[str, ...] = ()
    allow_any_iss: bool = False  # development only (empty allow-list and auth off)
    scope: str = DEFAULT_SCOPE
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AppConfig:
        """Read `Settings.extra`, then the FHIR_SERVER_APP_* environment variables."""
        extra = settings.extra or {}

        def pick(key: str, env: str, default: str = "") -> str:
            value = extra.get(key)
            return value if value is not None else os.environ.get(env, default)

        secret = extra.get("app_client_secret")
        secret_file = os.environ.get("FHIR_SERVER_APP_CLIENT_SECRET_FILE", "")
        if secret is None and secret_file:
            secret = Path(secret_file).read_text().strip() or None
        allowed = tuple(normalise_base(x) for x in
                        pick("app_allowed_iss", "FHIR_SERVER_APP_ALLOWED_ISS").split(",")
                        if x.strip())
        return cls(
            client_id=pick("app_client_id", "FHIR_SERVER_APP_CLIENT_ID", DEFAULT_CLIENT_ID),
            client_secret=secret or None,
            redirect_uri=pick("app_redirect_uri", "FHIR_SERVER_APP_REDIRECT_URI"),
            allowed_iss=allowed,
            allow_any_iss=not allowed and settings.auth_mode == "off",
            scope=pick("app_scope", "FHIR_SERVER_APP_SCOPE", DEFAULT_SCOPE),
            timeout=float(pick("app_timeout", "FHIR_SERVER_APP_TIMEOUT", "10")),
        )

    def iss_allowed(self, iss: str) -> bool:
        """Whether `iss` is an EHR we accept launches from."""
        return self.allow_any_iss or normalise_base(iss) in self.allowed_iss


def normalise_base(url: str) -> str:
    """A FHIR base for comparison: trimmed, without a trailing slash."""
    return url.strip().rstrip("/")
