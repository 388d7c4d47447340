"""`AccessContext`: who is calling, on whose behalf, with which scopes. The canonical one.

Every interaction receives an AccessContext from `bearer.authenticate` (or `SYSTEM` for
internal jobs such as the subscription worker or the stalled-referral sweeper) and passes
it to `policy.check_interaction` / `policy.restrict_for`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.auth.scopes import ScopeSet, parse_scopes


@dataclass(frozen=True)
class AccessContext:
    """The caller of one request.

    Fields:
      client_id     registered OAuth client (None for SYSTEM / auth-off development).
      user          local username for user-delegated tokens (None for Backend Services).
      fhir_user     "Practitioner/x" (or PractitionerRole/...) the user is linked to.
      organization  "Organization/x" the client or user acts for: the referral-compartment
                    key of the organization policy. None = no organization restriction
                    (only SYSTEM, admins and auth-off development).
      patient       in-context Patient id (launch context); binds `patient/` scopes.
      encounter     in-context Encounter id.
      scopes        parsed granted scopes (`ScopeSet`).
      token_id      stable id of the access token (for audit and revocation), not the token.
      fhir_context  launch `fhirContext` items (dicts with reference/canonical/identifier).
      is_system     internal job: every check passes, nothing is narrowed.
      is_admin      server administrator (may query AuditEvent; no organization narrowing).
      auth_disabled request served with FHIR_SERVER_AUTH=off (development only).
    """

    client_id: str | None = None
    user: str | None = None
    fhir_user: str | None = None
    organization: str | None = None
    patient: str | None = None
    encounter: str | None = None
    scopes: ScopeSet = field(default_factory=ScopeSet)
    token_id: str | None = None
    fhir_context: tuple[dict[str, Any], ...] = ()
    is_system: bool = False
    is_admin: bool = False
    auth_disabled: bool = False

    @property
    def unrestricted(self) -> bool:
        """True when no scope or organization check applies."""
        return self.is_system or self.auth_disabled

    def who(self) -> str:
        """Short human description for logs and audit."""
        if self.is_system:
            return "system"
        parts = [p for p in (self.user, self.fhir_user, self.client_id) if p]
        return " / ".join(parts) or "anonymous"


SYSTEM = AccessContext(client_id=None, scopes=parse_scopes("system/*.cruds"), is_system=True)
"""Context for internal jobs (workers, migrations, seeding): unrestricted."""

DEVELOPMENT = AccessContext(
    client_id="auth-off", scopes=parse_scopes("system/*.cruds"), is_admin=True, auth_disabled=True
)
"""Context used for every request when FHIR_SERVER_AUTH=off (local development only)."""

NOBODY = AccessContext(client_id=None)
"""Context of a call that carries no identity: no scope, so every check fails (fail closed).
Server code that must read or write without restriction says so with `SYSTEM`."""
