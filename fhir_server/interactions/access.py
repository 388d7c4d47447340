"""The access layer applied by every interaction: scopes and the organization policy
(fhir_server/auth/policy.py) turned into checks on stored resources and into SQL narrowing
of searches, includes, chains, `_has`, history and conditional matching.

Denials are audited (AuditEvent, own transaction) before the error is raised: 403 when no
scope covers the interaction, 404 when an existing resource is outside the caller's reach
(no existence leak).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhir_server.auth import policy
from fhir_server.auth.audit import OUTCOME_DENIED, OUTCOME_SUCCESS, build_audit_event
from fhir_server.auth.audit_store import record_audit
from fhir_server.auth.context import NOBODY, AccessContext
from fhir_server.auth.referral_compartment import (
    CANDIDATE_PATH,
    DerivedFrom,
    OfferedTo,
    OrgRef,
    ReferencedBy,
    SubjectOfOwnRecord,
    WrittenBy,
    organization_rules,
)
from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call
from fhir_server.interactions.references import collect_references
from fhir_server.interactions.results import Result
from fhir_server.resource_types import resource_types
from fhir_server.search.parser import parse_search
from fhir_server.storage import access_sql as q
from fhir_server.storage.access_sql import Clause
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import StoredResource
from fhir_server.storage.search_sql import where_clause

Restrict = Callable[..., Clause]  # (alias, types=None) -> clause

#: The search parameters that index each path of the referral-compartment rules.
PATH_PARAMS: dict[str, tuple[str, ...]] = {
    "Task.owner": ("owner",),
    "Task.requester": ("requester",),
    "Task.focus": ("focus",),
    "Task.for": ("subject",),
    "Task.output.value": ("output",),
    "Patient.managingOrganization": ("organization",),
    "ServiceRequest.requester": ("requester",),
    "ServiceRequest.performer": ("performer",),
    "ServiceRequest.subject": ("subject",),
    "ServiceRequest.supportingInfo": ("supporting-info",),
    "ServiceRequest.supportingInfo | ServiceRequest.reasonReference": (
        "supporting-info", "reason-reference"),
    "ServiceRequest.encounter": ("encounter",),
    "Procedure.performer.actor": ("performer",),
    "Observation.derivedFrom": ("derived-from",),
    CANDIDATE_PATH: ("candidate",),
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
    if ctx.unrestricted or interaction not in WRITES:
        return
    if not owns_directory_entry(ctx, resource):
        ref = f"{resource.get('resourceType')}/{resource.get('id')}"
        raise deny(call, interaction, FhirError(
            403, "forbidden", f"{ref} belongs to another organization: only its own "
            "organization may change a directory entry"), [ref])


def ctx_of(call: Call) -> AccessContext:
    """The caller's context; a call without one may do nothing (fail closed): server code
    passes `SYSTEM` explicitly."""
    return call.access if isinstance(call.access, AccessContext) else NOBODY


def _unrestricted(call: Call) -> bool:
    ctx = ctx_of(call)
    return ctx.unrestricted or (ctx.is_admin and ctx.organization is None)


def deny(call: Call, interaction: str, error: FhirError, entities: list[str] | None = None,
         query: str | None = None) -> FhirError:
    """Queue the denial's AuditEvent and return the error to raise. The event is stored by
    `flush_audit` once the request's own transaction is over (it rolls back on the error,
    and a second write transaction may not start while the first holds the write lock)."""
    ctx = ctx_of(call)
    call.pending_audit.append(build_audit_event(
        ctx, interaction, OUTCOME_DENIED, entities=entities, query=query,
        description=error.diagnostics, client_id=ctx.client_id))
    return error


#: At most this many AuditEvents (one per patient) for one read; past it, one more event
#: names the interaction without a patient, with the count in its description.
MAX_PATIENT_EVENTS = 200


def audit_reads(call: Call, interaction: str, result: Result, query: str,
                address: str | None) -> None:
    """Queue the BALP AuditEvents of a successful read of patient data: one per patient
    the returned resources identify (BALP PatientRead / PatientQuery), for every caller but
    the server itself and development without authentication."""
    ctx = ctx_of(call)
    queue = call.services.audit_queue
    if queue is None or ctx.is_system or ctx.auth_disabled or result.status != 200:
        return
    returned = _returned(result)
    patients = sorted(_patients_in(returned))
    if not patients:
        return
    entities = [f"{r['resourceType']}/{r['id']}" for r in returned
                if r.get("id") and r.get("resourceType") != "Patient"][:50]
    searched = query if interaction.startswith(("search", "history", "operation")) else None
    for patient in patients[:MAX_PATIENT_EVENTS]:
        queue.put(build_audit_event(
            ctx, interaction, OUTCOME_SUCCESS, entities=entities, patients=[patient],
            query=searched, address=address, client_id=ctx.client_id, server=call.base_url))
    if len(patients) > MAX_PATIENT_EVENTS:
        queue.put(build_audit_event(
            ctx, interaction, OUTCOME_SUCCESS, query=searched, address=address,
            client_id=ctx.client_id, server=call.base_url,
            description=f"{len(patients)} patients; the first {MAX_PATIENT_EVENTS} have "
                        "their own event"))


def _returned(result: Result) -> list[dict]:
    if result.stored is not None and result.stored.body is not None:
        return [result.stored.resource()]
    resource = result.resource
    if not isinstance(resource, dict):
        return []
    if resource.get("resourceType") == "Bundle":
        return [e["resource"] for e in resource.get("entry") or []
                if isinstance(e.get("resource"), dict)]
    return [resource]


def _patients_in(resources: list[dict]) -> set[str]:
    """`Patient/id` of every Patient returned and every Patient a returned one references."""
    found: set[str] = set()
    for resource in resources:
        if resource.get("resourceType") == "Patient" and resource.get("id"):
            found.add(f"Patient/{resource['id']}")
        for ref in collect_references(resource, []):
            if ref.startswith("Patient/"):
                found.add(ref.split("/_history/")[0])
    return found


def flush_audit(call: Call) -> None:
    """Store the queued denial AuditEvents (each in its own short transaction)."""
    events, call.pending_audit = call.pending_audit, []
    for event in events:
        record_audit(call.db, event)


def check_type(call: Call, interaction: str, res_type: str | None) -> None:
    """May the caller do `interaction` on `res_type` at all (scopes)? 403 otherwise."""
    ctx = ctx_of(call)
    if ctx.unrestricted:
        return
    try:
        policy.check_interaction(ctx, interaction, res_type)
    except FhirError as exc:
        raise deny(call, interaction, exc) from exc


def check_new(call: Call, interaction: str, res_type: str, resource: dict) -> None:
    """May the caller write this new content (scope context and granular filters)?"""
    ctx = ctx_of(call)
    if ctx.unrestricted:
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
    if ctx.unrestricted:
        return
    ref = f"{stored.res_type}/{stored.res_id}"
    try:
        resource = stored.resource() if stored.body is not None else {
            "resourceType": stored.res_type, "id": stored.res_id}
        policy.check_interaction(ctx, interaction, stored.res_type, resource, stored=True)
    except FhirError as exc:
        raise deny(call, interaction, exc, [ref]) from exc
    if not q.row_visible(conn, stored.pid, lambda r: type_clause(conn, call, stored.res_type,
                                                                  r, interaction)):
        raise deny(call, interaction, FhirError(404, "not-found", f"Resource {ref} is not known"),
                   [ref])
    if stored.body is not None:
        _directory_write_check(call, interaction, resource)
        _author_write_check(conn, call, interaction, stored)


#: Types whose changes by other organizations the workflow rules decide (the referral Task
#: state machine, the ServiceRequest lifecycle); directory entries have their own rule.
WORKFLOW_TYPES = frozenset({"Task", "ServiceRequest"})


def _author_write_check(conn: Connection, call: Call, interaction: str,
                        stored: StoredResource) -> None:
    """An organization changes or deletes only what it wrote: a recipient may not, say,
    turn the referring clinic's Consent active or rewrite its patient's record."""
    ctx = ctx_of(call)
    if (interaction not in WRITES or ctx.organization is None or ctx.is_admin
            or stored.res_type in WORKFLOW_TYPES or stored.res_type in DIRECTORY_OWNER):
        return
    if not q.row_visible(conn, stored.pid, lambda r: q.written_by(r, ctx.organization)):
        ref = f"{stored.res_type}/{stored.res_id}"
        raise deny(call, interaction, FhirError(
            403, "forbidden", f"{ref} was written by another organization: only its author "
            "may change or delete it"), [ref])


def restriction(conn: Connection, call: Call, interaction: str = "search-type"
                ) -> Restrict | None:
    """The SQL narrowing for searches, includes, chains and history (None: none needed)."""
    if _unrestricted(call):
        return None
    ctx = ctx_of(call)
    open_types: set[str] = set()
    own_only: set[str] = set()  # visible only when the caller's organization wrote them
    narrowed: list[str] = []
    organization = None
    for res_type in sorted(resource_types()):
        rule = policy.restrict_for(ctx, res_type, interaction)
        if not rule.allowed:
            continue
        if rule.alternatives is None and (rule.organization is None or rule.shared):
            open_types.add(res_type)
        elif rule.alternatives is None and rule.rules == (WrittenBy(),):
            own_only.add(res_type)
            organization = rule.organization
        else:
            narrowed.append(res_type)
    frozen_open, frozen_own = frozenset(open_types), frozenset(own_only)

    def restrict(r: Any, types: Iterable[str] | None = None) -> Clause:
        """Rows of `r` the caller may see; `types`: the types `r` can hold (a search of
        one type needs that type's clause only, not every type's)."""
        wanted = None if types is None else frozenset(types)
        opened = frozen_open if wanted is None else frozen_open & wanted
        own = frozen_own if wanted is None else frozen_own & wanted
        clauses = [q.type_in(r, opened)]
        if own and organization is not None:  # one clause for all of them
            clauses.append(q.all_of([q.type_in(r, own), q.written_by(r, organization)]))
        clauses += [q.all_of([q.type_is(r, t), type_clause(conn, call, t, r, interaction)])
                    for t in narrowed if wanted is None or t in wanted]
        return q.any_of(clauses)

    return restrict


# -- composition -------------------------------------------------------------------------
def _org_refs(conn: Connection, call: Call, organization: str) -> frozenset[tuple[str, str]]:
    """Organization/O plus its PractitionerRoles and HealthcareServices (cached per call)."""
    key = ("access-org-refs", organization)
    cached = call.hook_state.get(key)
    if cached is None:
        cached = call.hook_state[key] = q.org_refs(conn, organization)
    return cached


def type_clause(conn: Connection, call: Call, res_type: str, r: Any,
                 interaction: str) -> Clause:
    ctx = ctx_of(call)
    rule = policy.restrict_for(ctx, res_type, interaction)
    if not rule.allowed:
        return q.any_of([])
    parts: list[Clause] = []
    if rule.alternatives is not None:
        parts.append(q.any_of([_alternative(conn, res_type, alt, r)
                               for alt in rule.alternatives]))
    if rule.organization is not None and not rule.shared:
        org = _Org(rule.organization, _org_refs(conn, call, rule.organization))
        parts.append(_visible(res_type, r, org))
    return q.all_of(parts)


def _alternative(conn: Connection, res_type: str, alt: policy.Alternative,
                 r: Any) -> Clause:
    parts: list[Clause] = []
    if alt.params:
        parsed = parse_search(res_type, list(alt.params), strict=True)
        parts.append(where_clause(conn, parsed, r, None))
    if alt.patient is not None:
        if res_type == "Patient":
            parts.append(q.id_is(r, alt.patient))
        else:
            parts.append(q.references_patient(r, tuple(alt.compartment_params), alt.patient))
    return q.all_of(parts)


class _Org:
    """The organization a clause is built for: its reference and its org refs."""

    def __init__(self, reference: str, refs: frozenset[tuple[str, str]]) -> None:
        self.reference = reference
        self.refs = refs


def _visible(res_type: str, r: Any, org: _Org) -> Clause:
    """Row `r` of `res_type` is visible to the organization (referral_compartment.py)."""
    clauses: list[Clause] = []
    for rule in organization_rules(res_type):
        if isinstance(rule, WrittenBy):
            clauses.append(q.written_by(r, org.reference))
        elif isinstance(rule, SubjectOfOwnRecord):
            clauses.append(q.referenced_by_author(r, res_type, org.reference))
        elif isinstance(rule, OrgRef):
            clauses.append(q.references_any(r, PATH_PARAMS[rule.path], org.refs))
        elif isinstance(rule, ReferencedBy):
            clauses.append(q.referenced_by(
                r, res_type, rule.source_type, PATH_PARAMS[rule.path],
                _source_visible(rule, org)))
        elif isinstance(rule, DerivedFrom):
            clauses += [q.references_live(r, param, rule.target_type,
                                          _target_visible(rule.target_type, org))
                        for param in PATH_PARAMS[rule.path]]
        elif isinstance(rule, OfferedTo):  # an open referral: requested, no owner yet
            clauses.append(q.all_of([q.has_token(r, "status", "requested"),
                                     q.lacks_reference(r, "owner"),
                                     q.references_any(r, PATH_PARAMS[rule.path], org.refs)]))
    return q.any_of(clauses)


def _target_visible(target_type: str, org: _Org) -> Callable[[Any], Clause]:
    return lambda t: _visible(target_type, t, org)


def _source_visible(rule: ReferencedBy, org: _Org) -> Callable[[Any], Clause]:
    def visible(s: Any) -> Clause:
        clause = _visible(rule.source_type, s, org)
        if rule.consent_gated:  # an active Consent written by the source's own author
            clause = q.all_of([clause, q.references_live(
                s, "supporting-info", "Consent",
                lambda c: q.all_of([q.has_token(c, "status", "active"),
                                    q.same_author(c, s)]))])
        return clause
    return visible
