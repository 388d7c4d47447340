"""SMART on FHIR wired into the app: the authorization server's routes, bearer-token
authentication of every FHIR request, the CapabilityStatement security block, audit of
every write, Provenance for referral Task/ServiceRequest writes, and the subscription
visibility check. The policy itself is fhir_server/auth/policy.py, applied by
fhir_server/interactions/access.py on every interaction."""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from fhir_server.auth.audit import OUTCOME_SUCCESS, build_audit_event, build_provenance
from fhir_server.auth.audit_store import AuditQueue, insert_audit
from fhir_server.auth.bearer import authenticate
from fhir_server.auth.context import AccessContext
from fhir_server.auth.discovery import capability_security
from fhir_server.auth.invitations import create_join_blueprint
from fhir_server.auth.registry import User
from fhir_server.auth.scopes import parse_scopes
from fhir_server.auth.server import create_auth_blueprint
from fhir_server.interactions import access
from fhir_server.interactions.caller_view import CallerView
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.references import collect_references
from fhir_server.interactions.results import Result
from fhir_server.storage.access_sql import row_visible
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository, StoredResource

OPEN_PATHS = ("/fhir/metadata", "/fhir/.well-known")
PROVENANCE_TYPES = frozenset({"Task", "ServiceRequest"})


def init_app(app: Flask, services: Services) -> None:
    """Mount the authorization server and authenticate every FHIR request."""
    settings, db = services.settings, services.db
    app.register_blueprint(create_auth_blueprint(
        db, settings, patient_lookup=lambda user, query: patient_lookup(services, user, query),
        hidden_references=lambda user, refs: hidden_references(services, user, refs)))
    app.register_blueprint(create_join_blueprint(db))

    @app.before_request
    def _authenticate() -> None:
        path = request.path.rstrip("/")
        if not (path == "/fhir" or path.startswith("/fhir/")) or path.startswith(OPEN_PATHS):
            return
        base = settings.base_url or request.host_url.rstrip("/") + "/fhir"
        request.fhir_access = authenticate(request.headers, db, settings,
                                           address=request.remote_addr, base_url=base)


def install(services: Services, registry: OperationRegistry) -> None:
    """Audit every write, publish the security block, $audit-events and the
    subscription visibility check (the web part: `init_app`)."""
    settings = services.settings
    services.capability_extras.security = lambda call: capability_security(
        settings, _host_url())
    registry.register(Operation(
        name="audit-events", handler=_audit_events, system=True,
        methods=frozenset({"GET", "POST"}), reads="query",
        definition="http://mh-referral.example.org/fhir/OperationDefinition/audit-events",
        documentation="The audit log as AuditEvents (administrators only); parameters "
                      "outcome (0 success, 4 denied), client, _count"))
    services.phases.add("after-write", "auth.audit-and-provenance", _audit_write, order=100)
    if settings.audit_reads:
        services.audit_queue = AuditQueue(services.db)
    services.readable_by = lambda owner, resource, conn=None: readable_by(
        services, owner, resource, conn)
    services.subscription_filter = _subscription_filter


def _host_url() -> str | None:
    try:
        return request.host_url
    except RuntimeError:  # outside a request (loader, worker)
        return None


def _audit_write(event: WriteEvent) -> None:
    """Every write is audited in its own transaction (kept only if the write commits);
    referral Task and ServiceRequest writes also get a Provenance."""
    conn, call, interaction, new = event.conn, event.call, event.interaction, event.stored
    assert new is not None
    ctx = access.ctx_of(call)
    if ctx.is_system or ctx.auth_disabled:
        return  # internal jobs, and local development without identities
    target = f"{new.res_type}/{new.res_id}/_history/{new.version}"
    insert_audit(conn, build_audit_event(ctx, interaction, OUTCOME_SUCCESS, entities=[target],
                                         client_id=ctx.client_id, server=call.base_url,
                                         patients=_patients_of(new)))
    if new.res_type in PROVENANCE_TYPES:
        activity = {"create": "CREATE", "delete": "DELETE"}.get(interaction, "UPDATE")
        Repository(conn).create(build_provenance(ctx, target, activity))


def _patients_of(stored: StoredResource) -> list[str]:
    """The Patient a written resource is or refers to (BALP Patient* patterns)."""
    if stored.body is None:
        return []
    if stored.res_type == "Patient":
        return [f"Patient/{stored.res_id}"]
    return sorted({ref.split("/_history/")[0] for ref in collect_references(
        stored.resource(), []) if ref.startswith("Patient/")})


def _subscription_filter(call: Call) -> Any:
    """$status shows a caller only its own organization's Subscriptions."""
    ctx = access.ctx_of(call)
    if ctx.unrestricted or (ctx.is_admin and ctx.organization is None):
        return None
    return lambda state: getattr(state, "owner", None) == ctx.organization


def user_context(user: User) -> AccessContext:
    """What a signed-in user of the authorization server may read (before any app token):
    their organization's view, as `user/*.rs`."""
    return AccessContext(client_id=None, user=user.username, fhir_user=user.fhir_user,
                         organization=user.organization, scopes=parse_scopes("user/*.rs"),
                         is_admin=user.is_admin)


def patient_lookup(services: Services, user: User, query: str) -> list[dict[str, Any]]:
    """The standalone-launch patient picker: the Patients the signed-in user may see whose
    name matches `query` (at most 20), searched with the user's own access."""
    if not query.strip():
        return []
    call = Call(services=services, base_url="", access=user_context(user))
    with services.db.read() as conn:
        patients = CallerView(conn, call).search("Patient", [("name", query.strip())],
                                                 limit=20)
    out = []
    for patient in patients:
        name = (patient.get("name") or [{}])[0]
        display = " ".join(name.get("given", []) + [name.get("family", "")]).strip()
        out.append({"id": patient["id"], "display": display or patient["id"],
                    "birthDate": patient.get("birthDate")})
    return out


def hidden_references(services: Services, user: User, references: list[str]) -> list[str]:
    """The launch-context references the signed-in user may not read (missing or hidden)."""
    call = Call(services=services, base_url="", access=user_context(user))
    with services.db.read() as conn:
        view = CallerView(conn, call)
        return [ref for ref in references if view.read(ref) is None]


def readable_by(services: Services, owner: str | None, resource: dict,
                conn: Connection | None = None) -> bool:
    """May the organization owning a Subscription read `resource` (its current version)?
    None owner (auth off or administrators) reads everything."""
    if owner is None:
        return True
    ctx = AccessContext(client_id=None, organization=owner,
                        scopes=parse_scopes("system/*.rs"))
    call = Call(services=services, base_url="", access=ctx)
    if conn is not None:
        return _visible(conn, call, resource)
    with services.db.read() as own:
        return _visible(own, call, resource)


def _visible(conn: Connection, call: Call, resource: dict) -> bool:
    stored = Repository(conn).read(str(resource.get("resourceType")), str(resource.get("id")))
    if stored is None:
        return False
    restrict = access.restriction(conn, call, "search-type")
    if restrict is None:
        return True
    return row_visible(conn, stored.pid, restrict)


def _audit_events(call: Call, res_type: str | None, res_id: str | None,
                  params: list[tuple[str, str]], body: Any) -> Result:
    """GET /fhir/$audit-events: the audit log (administrators and SYSTEM only); the same
    search as `GET AuditEvent` (patient, entity, agent, date, outcome, client, _count)."""
    from fhir_server.interactions import audit_events

    return audit_events.route(call, "GET", None, params)
