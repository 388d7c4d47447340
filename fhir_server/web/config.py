"""Configuration of our web apps (`fhir_server/web/`): where their FHIR API is, the key that
seals their cookies, and how the clinician app accepts launches from external EHRs.

Values come from `Settings.extra` (tests) first, then from the environment:

* `web_api_base` / `FHIR_SERVER_WEB_API_BASE`: the FHIR base the apps use; empty = this
  server, called in process.
* `web_secret_file` / `FHIR_SERVER_WEB_SECRET_FILE`: the file holding the cookie-sealing key
  (created on first use); default `<FHIR_SERVER_VAR_DIR or var>/web-secret.key`.
* `web_refresh_seconds` / `FHIR_SERVER_WEB_REFRESH_SECONDS`: how often lists poll for changes
  (at least 10; default 15).
* `app_client_id` / `FHIR_SERVER_APP_CLIENT_ID`: the clinician app's client_id at external
  EHRs (default `mh-referral-app`, also its id at this server).
* `app_client_secret` / `FHIR_SERVER_APP_CLIENT_SECRET_FILE`: a file with the secret, for
  EHRs that registered the app as a confidential client.
* `app_redirect_uri` / `FHIR_SERVER_APP_REDIRECT_URI`: the callback given to EHRs; default
  `<this host>/app/callback`.
* `app_allowed_iss` / `FHIR_SERVER_APP_ALLOWED_ISS`: comma-separated external EHR FHIR bases
  accepted as `iss`.
* `app_scope` / `FHIR_SERVER_APP_SCOPE`: scopes asked of an external EHR besides `launch`.
* `app_timeout` / `FHIR_SERVER_APP_TIMEOUT`: seconds for each call to another server
  (default 10).

An empty EHR allow-list accepts any external `iss` only in development (`FHIR_SERVER_AUTH=off`);
launches from this server itself are always accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from fhir_server.config import Settings

DEFAULT_CLIENT_ID = "mh-referral-app"
DEFAULT_EHR_SCOPE = ("openid fhirUser patient/Patient.rs patient/Observation.rs "
                     "patient/QuestionnaireResponse.rs patient/ServiceRequest.cr")
MIN_REFRESH_SECONDS = 10


@dataclass(frozen=True)
class WebConfig:
    """Settings shared by every app in `fhir_server/web/`."""

    api_base: str = ""  # empty: this server, in process
    secret_file: Path = Path("var/web-secret.key")
    refresh_seconds: int = 15
    auth_off: bool = False
    base_url: str = ""  # Settings.base_url (this server's public FHIR base, may be empty)
    platform_organization: str = ""
    client_id: str = DEFAULT_CLIENT_ID
    ehr_client_secret: str | None = None
    ehr_redirect_uri: str = ""
    allowed_iss: tuple[str, ...] = ()
    allow_any_iss: bool = False
    ehr_scope: str = DEFAULT_EHR_SCOPE
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        """Read `Settings.extra`, then the environment."""
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
        var_dir = Path(os.environ.get("FHIR_SERVER_VAR_DIR", "var"))
        refresh = int(pick("web_refresh_seconds", "FHIR_SERVER_WEB_REFRESH_SECONDS", "15"))
        return cls(
            api_base=normalise_base(pick("web_api_base", "FHIR_SERVER_WEB_API_BASE")),
            secret_file=Path(pick("web_secret_file", "FHIR_SERVER_WEB_SECRET_FILE",
                                  str(var_dir / "web-secret.key"))),
            refresh_seconds=max(MIN_REFRESH_SECONDS, refresh),
            auth_off=settings.auth_mode == "off",
            base_url=normalise_base(settings.base_url),
            platform_organization=settings.platform_organization,
            client_id=pick("app_client_id", "FHIR_SERVER_APP_CLIENT_ID", DEFAULT_CLIENT_ID),
            ehr_client_secret=secret or None,
            ehr_redirect_uri=pick("app_redirect_uri", "FHIR_SERVER_APP_REDIRECT_URI"),
            allowed_iss=allowed,
            allow_any_iss=not allowed and settings.auth_mode == "off",
            ehr_scope=pick("app_scope", "FHIR_SERVER_APP_SCOPE", DEFAULT_EHR_SCOPE),
            timeout=float(pick("app_timeout", "FHIR_SERVER_APP_TIMEOUT", "10")),
        )

    def iss_allowed(self, iss: str) -> bool:
        """Whether `iss` is an external EHR we accept launches from."""
        return self.allow_any_iss or normalise_base(iss) in self.allowed_iss


def normalise_base(url: str) -> str:
    """A FHIR base for comparison: trimmed, without a trailing slash."""
    return url.strip().rstrip("/")
