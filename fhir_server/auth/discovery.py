"""Endpoint URLs and the discovery documents (SMART configuration, OpenID configuration,
CapabilityStatement security block)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fhir_server.config import Settings

DEFAULT_FHIR_PATH = "/fhir"
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post",
    "client-public", "client-confidential-symmetric", "client-confidential-asymmetric",
    "sso-openid-connect", "context-banner", "context-style",
    "context-ehr-patient", "context-ehr-encounter", "context-standalone-patient",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2",
]
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "profile", "launch", "launch/patient", "offline_access",
    "online_access", "patient/*.cruds", "user/*.cruds", "system/*.cruds", "patient/*.rs",
    "user/*.rs", "system/Task.rsu", "system/ServiceRequest.rs", "patient/*.read",
    "user/*.read", "user/*.write", "system/*.read",
]


@dataclass(frozen=True)
class AuthUrls:
    """Absolute URLs of the FHIR base and every authorization endpoint."""

    fhir_base: str
    auth_base: str

    @classmethod
    def from_settings(cls, settings: Settings, host_url: str | None = None) -> AuthUrls:
        """URLs from `settings.base_url`; when that is empty (derive-from-Host mode), from
        the request's `host_url` ("http://host:port/") and the default `/fhir` path."""
        base = settings.base_url.rstrip("/")
        if not base:
            base = (host_url or "http://127.0.0.1:8080/").rstrip("/") + DEFAULT_FHIR_PATH
        parts = urlsplit(base)
        auth = settings.auth_base_url or f"{parts.scheme}://{parts.netloc}/auth"
        return cls(base, auth.rstrip("/"))

    @property
    def issuer(self) -> str:
        """OIDC issuer: the FHIR base, so `{iss}/.well-known/openid-configuration` resolves."""
        return self.fhir_base

    def __getattr__(self, name: str) -> str:
        paths = {
            "authorize": "authorize", "token": "token", "introspect": "introspect",
            "revoke": "revoke", "jwks": "jwks", "launch": "launch", "login": "login",
            "style": "smart-style.json",
        }
        if name in paths:
            return f"{self.auth_base}/{paths[name]}"
        raise AttributeError(name)


def smart_configuration(urls: AuthUrls) -> dict[str, Any]:
    """The `.well-known/smart-configuration` document (SMART App Launch 2.2)."""
    return {
        "issuer": urls.issuer,
        "jwks_uri": urls.jwks,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt", "client_secret_basic", "client_secret_post",
        ],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "capabilities": CAPABILITIES,
    }


def openid_configuration(urls: AuthUrls) -> dict[str, Any]:
    """The OpenID Provider metadata served at `{issuer}/.well-known/openid-configuration`."""
    return {
        "issuer": urls.issuer,
        "authorization_endpoint": urls.authorize,
        "token_endpoint": urls.token,
        "jwks_uri": urls.jwks,
        "introspection_endpoint": urls.introspect,
        "revocation_endpoint": urls.revoke,
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "fhirUser", "profile"],
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "fhirUser", "name", "nonce"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": [
            "private_key_jwt", "client_secret_basic", "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
    }


def capability_security(settings: Settings, host_url: str | None = None) -> dict[str, Any]:
    """`CapabilityStatement.rest[0].security` with the SMART `oauth-uris` extension.

    fhirclient discovers the endpoints only from this extension. Pass the request's
    `host_url` when `settings.base_url` is empty.
    """
    urls = AuthUrls.from_settings(settings, host_url)
    return {
        "cors": True,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)",
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": urls.authorize},
                {"url": "token", "valueUri": urls.token},
                {"url": "introspect", "valueUri": urls.introspect},
                {"url": "revoke", "valueUri": urls.revoke},
            ],
        }],
        "description": "SMART App Launch 2.2 (EHR and standalone launch, PKCE S256) and "
        "SMART Backend Services (private_key_jwt RS384/ES384).",
    }
