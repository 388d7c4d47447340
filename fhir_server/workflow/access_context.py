"""The access context the workflow rules judge, and how it maps onto Task parties.

`AccessContext` is the canonical one from `fhir_server.auth.context` (re-exported here so the
workflow package has one import point); this module adds the two questions the rules ask:
is the caller privileged, and does the caller stand for a given party reference.

A party (Task.requester, Task.owner, ServiceRequest.requester) is represented by the caller when
the reference names the caller's `organization` or `fhir_user`, or names a PractitionerRole or
HealthcareService that `party_organizations` maps to the caller's organization (the caller of
the rules resolves PractitionerRole.organization / HealthcareService.providedBy for them).
"""

from __future__ import annotations

from collections.abc import Mapping

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.workflow.refs import normalize_ref, same_ref

__all__ = ["SYSTEM", "AccessContext", "is_privileged", "represents"]


def is_privileged(ctx: AccessContext) -> bool:
    """Internal jobs, administrators and auth-off development bypass party rules.

    They still obey the state machine and the content rules.
    """
    return bool(ctx.is_system or ctx.is_admin or ctx.auth_disabled)


def represents(
    ctx: AccessContext,
    party_ref: str | None,
    party_organizations: Mapping[str, str] | None = None,
) -> bool:
    """True when `ctx` acts for the party named by `party_ref`."""
    if not party_ref:
        return False
    if same_ref(party_ref, ctx.organization) or same_ref(party_ref, ctx.fhir_user):
        return True
    if party_organizations and ctx.organization:
        key = normalize_ref(party_ref)
        for ref, org in party_organizations.items():
            if normalize_ref(ref) == key and same_ref(org, ctx.organization):
                return True
    return False
