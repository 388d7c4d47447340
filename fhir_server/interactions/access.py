"""The access layer applied by every interaction: scopes and the organization policy
(fhir_server/auth/policy.py) turned into checks on stored resources and into SQL narrowing
of searches, includes, chains, `_has`, history and conditional matching.

Denials are audited (AuditEvent, own transaction) before the error is raised: 403 when no
scope covers the interaction, 404 when an existing resource is outside the caller's reach
(no existence leak).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, or_, select

from fhir_server.auth import policy
from fhir_server.auth.audit import OUTCOME_DENIED, build_audit_event
from fhir_server.auth.audit_store import record_audit
from fhir_server.auth.context import AccessContext
from fhir_server.auth.referral_compartment import REFERRAL_RULES, OrgRef, ReferencedBy
from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call
from fhir_server.resource_types import resource_types
from fhir_server.search.parser import parse_search
from fhir_server.storage import access_sql as q
from fhir_server.storage.index_schema import idx_reference
from fhir_server.storage.repository import StoredResource
from fhir_server.storage.search_sql import where_clause

Restrict = Callable[[Any], ColumnElement[bool]]

#: The search parameters that index each path of the referral-compartment rules.
PATH_PARAMS: dict[str, tuple[str, ...]] = {
    "Task.owner": ("owner",),
    "Task.requester": ("requester",),
    "Task.focus": ("focus",),
    "Task.for": ("subject",),
    "Task.output.value": ("output",),
    "ServiceRequest.requester": ("requester",),
    "ServiceRequest.performer": ("performer",),
    "ServiceRequest.subject": ("subject",),
    "ServiceRequest.supportingInfo": ("supporting-info",),
    "ServiceRequest.supportingInfo | ServiceRequest.reasonReference": (
        "supporting-info", "reason-reference"),
    "ServiceRequest.encounter": ("encounter",),
    "Procedure.performer.actor": ("performer",),
}


#: Directory entries every partner may read but only their organization may change:
#: resource type -> element naming the owning Organization (None: the Organization itself).
DIRECTORY_OWNER: dict[str, str | None] = {
    "Organization": None,
    "HealthcareService": "providedBy",
    "PractitionerRole": "organization",
    "Location": "managingOrganization",
    "Endpoint": "managingOrganization",
}
WRITES = frozenset({"create", "update", "patch", "delete"})


def owns_directory_entry(ctx: AccessContext, resource: dict) -> bool:
    """Does the caller's organization own this directory entry (or is it not one)?"""
    res_type = resource.get("resourceType", "")
    if res_type not in DIRECTORY_OWNER or ctx.organization is None or ctx.is_admin:
        return True
    element = DIRECTORY_OWNER[res_type]
    if element is None:
        return f"Organization/{resource.get('id')}" == ctx.organization
    owner = (resource.get(element) or {}).get("reference")
    return owner == ctx.organization


def _directory_write_check(call: Call, interaction: str, resource: dict) -> None:
    ctx = ctx_of(call)
    if ctx is None or ctx.unrestricted or interaction not in WRITES:
        return
    if not owns_directory_entry(ctx, resource):
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise deny(call, interaction, FhirError(
            403, "forbidden", f"{ref} belongs to another organization: only its own "
            "organization may change a directory entry"), [ref])


def ctx_of(call: Call) -> AccessContext | None:
    return call.access if isinstance(call.access, AccessContext) else None


def _unrestricted(call: Call) -> bool:
    ctx = ctx_of(call)
    return ctx is None or ctx.unrestricted or (ctx.is_admin and ctx.organization is None)


def deny(call: Call, interaction: str, error: FhirError, entities: list[str] | None = None,
         query: str | None = None) -> FhirError:
    """Queue the denial's AuditEvent and return the error to raise. The event is stored by
    `flush_audit` once the request's own transaction is over (it rolls back on the error,
    and a second write transaction may not start while the first holds the write lock)."""
    ctx = ctx_of(call)
    call.pending_audit.append(build_audit_event(
        ctx, interaction, OUTCOME_DENIED, entities=entities, query=query,
        description=error.diagnostics, client_id=ctx.client_id if ctx else None))
    return error


def flush_audit(call: Call) -> None:
    """Store the queued denial AuditEvents (each in its own short transaction)."""
    events, call.pending_audit = call.pending_audit, []
    for event in events:
        record_audit(call.db, event)


def check_type(call: Call, interaction: str, res_type: str | None) -> None:
    """May the caller do `interaction` on `res_type` at all (scopes)? 403 otherwise."""
    ctx = ctx_of(call)
    if ctx is None or ctx.unrestricted:
        return
    try:
        policy.check_interaction(ctx, interaction, res_type)
    except FhirError as exc:
        raise deny(call, interaction, exc) from exc


def check_new(call: Call, interaction: str, res_type: str, resource: dict) -> None:
    """May the caller write this new content (scope context and granular filters)?"""
    ctx = ctx_of(call)
    if ctx is None or ctx.unrestricted:
        return
    try:
        policy.check_interaction(ctx, interaction, res_type, resource, stored=False)
    except FhirError as exc:
        raise deny(call, interaction, exc, [f"{res_type}/{resource.get('id')}"]) from exc
    _directory_write_check(call, interaction, resource)


def check_existing(conn: Connection, call: Call, interaction: str,
                   stored: StoredResource) -> None:
    """May the caller see (and so act on) this stored resource? 404 when it may not."""
    ctx = ctx_of(call)
    if ctx is None or ctx.unrestricted:
        return
    ref = f"{stored.res_type}/{stored.res_id}"
    try:
        resource = stored.resource() if stored.body is not None else {
            "resourceType": stored.res_type, "id": stored.res_id}
        policy.check_interaction(ctx, interaction, stored.res_type, resource, stored=True)
    except FhirError as exc:
        raise deny(call, interaction, exc, [ref]) from exc
    if not q.row_visible(conn, stored.pid, lambda r: _type_clause(conn, call, stored.res_type,
                                                                  r, interaction)):
        raise deny(call, interaction, FhirError(404, "not-found", f"Resource {ref} is not known"),
                   [ref])
    if stored.body is not None:
        _directory_write_check(call, interaction, resource)


def restriction(conn: Connection, call: Call, interaction: str = "search-type"
                ) -> Restrict | None:
    """The SQL narrowing for searches, includes, chains and history (None: none needed)."""
    if _unrestricted(call):
        return None
    ctx = ctx_of(call)
    assert ctx is not None
    open_types: set[str] = set()
    narrowed: list[str] = []
    for res_type in sorted(resource_types()):
        rule = policy.restrict_for(ctx, res_type, interaction)
        if not rule.allowed:
            continue
        if rule.alternatives is None and (rule.organization is None or rule.shared):
            open_types.add(res_type)
        else:
            narrowed.append(res_type)
    frozen_open = frozenset(open_types)

    def restrict(r: Any) -> ColumnElement[bool]:
        clauses = [q.type_in(r, frozen_open)]
        clauses += [and_(r.c.res_type == t, _type_clause(conn, call, t, r, interaction))
                    for t in narrowed]
        return or_(*clauses)

    return restrict


# -- composition -------------------------------------------------------------------------
def _org_refs(conn: Connection, call: Call, organization: str) -> frozenset[tuple[str, str]]:
    """Organization/O plus its PractitionerRoles and HealthcareServices (cached per call)."""
    key = ("access-org-refs", organization)
    cached = call.hook_state.get(key)
    if cached is not None:
        return cached
    org_type, _, org_id = organization.partition("/")
    x = idx_reference
    rows = conn.execute(select(x.c.res_type, x.c.pid).where(
        x.c.param == "organization", x.c.res_type.in_(("PractitionerRole", "HealthcareService")),
        x.c.target_type == org_type, x.c.target_id == org_id)).all()
    refs = {(org_type, org_id)}
    if rows:
        from fhir_server.storage.schema import resources

        ids = conn.execute(select(resources.c.res_type, resources.c.res_id).where(
            resources.c.pid.in_([row.pid for row in rows]))).all()
        refs.update((row.res_type, row.res_id) for row in ids)
    result = frozenset(refs)
    call.hook_state[key] = result
    return result


def _type_clause(conn: Connection, call: Call, res_type: str, r: Any,
                 interaction: str) -> ColumnElement[bool]:
    ctx = ctx_of(call)
    assert ctx is not None
    rule = policy.restrict_for(ctx, res_type, interaction)
    if not rule.allowed:
        return q.any_of([])
    parts: list[ColumnElement[bool]] = []
    if rule.alternatives is not None:
        parts.append(q.any_of([_alternative(conn, res_type, alt, r)
                               for alt in rule.alternatives]))
    if rule.organization is not None and not rule.shared:
        parts.append(_visible(conn, call, res_type, r, _org_refs(conn, call, rule.organization)))
    return q.all_of(parts)


def _alternative(conn: Connection, res_type: str, alt: policy.Alternative,
                 r: Any) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    if alt.params:
        parsed = parse_search(res_type, list(alt.params), strict=True)
        parts.append(where_clause(conn, parsed, r, None))
    if alt.patient is not None:
        if res_type == "Patient":
            parts.append(r.c.res_id == alt.patient)
        else:
            parts.append(q.references_patient(r, tuple(alt.compartment_params), alt.patient))
    return q.all_of(parts)


def _visible(conn: Connection, call: Call, res_type: str, r: Any,
             mine: frozenset[tuple[str, str]]) -> ColumnElement[bool]:
    """Row `r` of `res_type` is in the organization's referral compartment."""
    clauses: list[ColumnElement[bool]] = []
    for rule in REFERRAL_RULES.get(res_type, ()):
        if isinstance(rule, OrgRef):
            clauses.append(q.references_any(r, PATH_PARAMS[rule.path], mine))
        elif isinstance(rule, ReferencedBy):
            clauses.append(q.referenced_by(
                r, res_type, rule.source_type, PATH_PARAMS[rule.path],
                _source_visible(conn, call, rule, mine)))
    return q.any_of(clauses)


def _source_visible(conn: Connection, call: Call, rule: ReferencedBy,
                    mine: frozenset[tuple[str, str]]) -> Callable[[Any], ColumnElement[bool]]:
    def visible(s: Any) -> ColumnElement[bool]:
        clause = _visible(conn, call, rule.source_type, s, mine)
        if rule.consent_gated:  # the requester, or an active Consent in supportingInfo
            clause = and_(clause, or_(
                q.references_any(s, ("requester",), mine),
                q.references_live(s, "supporting-info", "Consent",
                                  lambda c: q.has_token(c, "status", "active"))))
        return clause
    return visible
