"""Configuration of our web apps (`fhir_server/web/`), from the `web_*` and `app_*`
settings of `fhir_server/config.py`: where their FHIR API is, the key that seals their
cookies, and how the clinician app accepts launches from external EHRs.

An empty EHR allow-list accepts any external `iss` only in development (`FHIR_SERVER_AUTH=off`);
launches from this server itself are always accepted.
"""

from __future__ import annotations

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
    stalled_policy: str = ""  # Settings.stalled_policy: the clocks the workspace shows

    @classmethod
    def from_settings(cls, settings: Settings) -> WebConfig:
        """The apps' configuration from the server settings (reads the secret file)."""
        secret = None
        if settings.app_client_secret_file:
            secret = Path(settings.app_client_secret_file).read_text().strip() or None
        allowed = tuple(normalise_base(x) for x in settings.app_allowed_iss.split(",")
                        if x.strip())
        return cls(
            api_base=normalise_base(settings.web_api_base),
            secret_file=Path(settings.web_secret_file
                             or Path(settings.var_dir) / "web-secret.key"),
            refresh_seconds=max(MIN_REFRESH_SECONDS, settings.web_refresh_seconds),
            auth_off=settings.auth_mode == "off",
            base_url=normalise_base(settings.base_url),
            platform_organization=settings.platform_organization,
            client_id=settings.app_client_id,
            ehr_client_secret=secret,
            ehr_redirect_uri=settings.app_redirect_uri,
            allowed_iss=allowed,
            allow_any_iss=not allowed and settings.auth_mode == "off",
            ehr_scope=settings.app_scope,
            timeout=settings.app_timeout,
            stalled_policy=settings.stalled_policy,
        )

    def iss_allowed(self, iss: str) -> bool:
        """Whether `iss` is an external EHR we accept launches from."""
        return self.allow_any_iss or normalise_base(iss) in self.allowed_iss


def normalise_base(url: str) -> str:
    """A FHIR base for comparison: trimmed, without a trailing slash."""
    return url.strip().rstrip("/")
