"""The SMART authorization server as a Flask blueprint (`create_auth_blueprint`)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, jsonify, redirect, request

from fhir_server.auth import authorize as az
from fhir_server.auth import login_store
from fhir_server.auth.audit import (
    OUTCOME_DENIED,
    OUTCOME_SUCCESS,
    build_audit_event,
)
from fhir_server.auth.audit_store import AuditSink, db_sink, insert_audit
from fhir_server.auth.bearer import bearer_value
from fhir_server.auth.client_auth import JwksFetcher, authenticate_client
from fhir_server.auth.context import AccessContext
from fhir_server.auth.discovery import AuthUrls, openid_configuration, smart_configuration
from fhir_server.auth.errors import OAuthError
from fhir_server.auth.grants import TokenService, introspect, revoke
from fhir_server.auth.keys import load_keys
from fhir_server.auth.pages import approval_page, error_page, login_page
from fhir_server.auth.registry import Client, User, get_client
from fhir_server.auth.scopes import parse_scopes, patient_account_scope
from fhir_server.auth.tokens import lookup_token
from fhir_server.config import Settings
from fhir_server.storage.db import Connection, Database

# (signed-in user, free text) -> the patients that user may see: [{id, display, birthDate}]
PatientLookup = Callable[[User, str], list[dict[str, Any]]]
# (signed-in user, ["Type/id", ...]) -> the references among them that user may NOT read
HiddenReferences = Callable[[User, list[str]], list[str]]
SESSION_COOKIE = "mhr_auth_session"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
SMART_STYLE = {
    "color_background": "#edeae3", "color_error": "#9e2d2d", "color_highlight": "#69b5ce",
    "color_modal_backdrop": "", "color_success": "#498e49", "color_text": "#303030",
    "dim_border_radius": "6px", "dim_font_size": "13px", "dim_spacing_size": "20px",
    "font_family_body": "Georgia, Times, 'Times New Roman', serif",
    "font_family_heading": "'HelveticaNeue-Light', Helvetica, Arial, 'Lucida Grande', sans-serif",
}
log = logging.getLogger(__name__)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_REF = re.compile(r"^[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")


def _no_patients(_user: User, _query: str) -> list[dict[str, Any]]:
    return []


def _all_hidden(_user: User, references: list[str]) -> list[str]:
    return list(references)  # without a FHIR layer to ask, no launch context is allowed


def create_auth_blueprint(
    db: Database,
    settings: Settings,
    *,
    patient_lookup: PatientLookup = _no_patients,
    hidden_references: HiddenReferences = _all_hidden,
    audit: AuditSink | None = None,
    jwks_fetcher: JwksFetcher | None = None,
) -> Blueprint:
    """The authorization server's routes (mount at the application root).

    `patient_lookup(user, query)` powers the standalone-launch patient picker: it returns
    dicts with `id`, `display` and optionally `birthDate` for a free-text query, limited to
    the patients the signed-in user may see. `hidden_references(user, refs)` names the
    launch-context references (patient, encounter, fhirContext) the user may not read: a
    launch never binds what its user could not open. `audit` receives every AuditEvent
    (default: the `auth_audit_events` table).
    """
    sink = audit or db_sink(db)
    throttle = login_store.Throttle(settings.login_max_failures, settings.login_lockout_seconds)
    fetcher = jwks_fetcher or JwksFetcher()
    bp = Blueprint("smart_auth", __name__)
    static = AuthUrls.from_settings(settings)
    fhir_path = urlsplit(static.fhir_base).path.rstrip("/")
    auth_path = urlsplit(static.auth_base).path.rstrip("/")

    def current_urls() -> AuthUrls:
        return AuthUrls.from_settings(settings, request.host_url)

    def audit_event(kind: str, outcome: str, description: str, client_id: str | None = None,
                    ctx: AccessContext | None = None) -> None:
        sink(build_audit_event(ctx, kind, outcome, description=description,
                               client_id=client_id, address=request.remote_addr,
                               authentication=True))

    def public_json(body: dict[str, Any], cache: str = "no-cache") -> Response:
        resp = jsonify(body)
        resp.headers["Access-Control-Allow-Origin"] = "*"
        resp.headers["Cache-Control"] = cache
        return resp

    # -- discovery ----------------------------------------------------------------------
    @bp.get(f"{fhir_path}/.well-known/smart-configuration")
    def smart_config() -> Response:
        return public_json(smart_configuration(current_urls()))

    @bp.get(f"{fhir_path}/.well-known/openid-configuration")
    @bp.get("/.well-known/openid-configuration")
    def openid_config() -> Response:
        return public_json(openid_configuration(current_urls()))

    @bp.get(f"{auth_path}/jwks")
    def jwks() -> Response:
        return public_json(load_keys(db).jwks(), "public, max-age=3600")

    @bp.get(f"{auth_path}/smart-style.json")
    def style() -> Response:
        return public_json(SMART_STYLE, "public, max-age=86400")

    # -- authorization endpoint -----------------------------------------------------
    def continue_url(rid: str, **extra: str) -> str:
        return f"{auth_path}/authorize/continue?" + urlencode({"rid": rid, **extra})

    @bp.route(f"{auth_path}/authorize", methods=["GET", "POST"])
    def authorize() -> Any:
        params = {k: v for k, v in request.values.items()}
        try:
            req = az.validate_request(db, current_urls(), params)
        except az.AuthorizeError as exc:
            audit_event("authorize", OUTCOME_DENIED, f"{exc.error}: {exc.description}",
                        params.get("client_id"))
            if exc.redirect:
                return redirect(exc.location(), 302)
            return Response(error_page(exc.error, exc.description), 400, mimetype="text/html")
        return redirect(continue_url(req.rid), 303)

    @bp.get(f"{auth_path}/authorize/continue")
    def authorize_continue() -> Any:
        rid = request.args.get("rid", "")
        req = az.load_pending(db, rid)
        if req is None:
            return Response(error_page("invalid_request", "Unknown or expired request"), 400,
                            mimetype="text/html")
        sid = request.cookies.get(SESSION_COOKIE)
        user = az.session_user(db, sid)
        if user is None or sid is None:
            return _html(login_page(f"{auth_path}/login", continue_url(rid)))
        own = user.patient_id  # a patient account: the patient is always themselves
        query = request.args.get("q", "")
        patients = (patient_lookup(user, query)
                    if (req.needs_patient and query and not own) else [])
        with db.read() as conn:
            client = get_client(conn, req.client_id)
        scopes = req.scope.split() if own is None else \
            patient_account_scope(parse_scopes(req.scope)).render().split()
        return _html(approval_page(
            client=(client.name if client and client.name else req.client_id),
            user=user.username, organization=user.organization or "your own record",
            scopes=scopes, needs_patient=req.needs_patient and own is None,
            patients=patients, q=query, rid=rid,
            csrf=az.csrf_token(sid, rid), action=f"{auth_path}/approve",
            action_continue=f"{auth_path}/authorize/continue",
            patient=own or (req.launch or {}).get("patient"),
        ))

    @bp.post(f"{auth_path}/login")
    def login_post() -> Any:
        next_url = request.form.get("next", "")
        if not next_url.startswith(f"{auth_path}/") or "//" in next_url:
            next_url = f"{auth_path}/login"
        try:
            result = az.login(db, request.form.get("username", ""),
                              request.form.get("password", ""), address=request.remote_addr,
                              throttle=throttle)
        except az.LockedOut as locked:
            audit_event("login", OUTCOME_DENIED,
                        f"sign-in refused (locked out) for {request.form.get('username', '')!r}")
            minutes = max(1, (locked.seconds + 59) // 60)
            message = (f"Too many failed sign-ins. Try again in {minutes} minute"
                       f"{'s' if minutes > 1 else ''}, or ask an administrator to unlock "
                       "the account.")
            resp = _html(login_page(f"{auth_path}/login", next_url, message), 429)
            resp.headers["Retry-After"] = str(locked.seconds)
            return resp
        if result is None:
            audit_event("login", OUTCOME_DENIED,
                        f"login failed for user {request.form.get('username', '')!r}")
            return _html(login_page(f"{auth_path}/login", next_url, "Wrong username or password"),
                         401)
        sid, user = result
        audit_event("login", OUTCOME_SUCCESS, f"user {user.username} signed in")
        resp = redirect(next_url, 303)
        resp.set_cookie(SESSION_COOKIE, sid, max_age=az.SESSION_LIFETIME, httponly=True,
                        samesite="Lax", secure=current_urls().auth_base.startswith("https"),
                        path=auth_path or "/")
        return resp

    @bp.post(f"{auth_path}/logout")
    def logout_post() -> Any:
        az.logout(db, request.cookies.get(SESSION_COOKIE))
        resp = _html(login_page(f"{auth_path}/login", f"{auth_path}/login"))
        resp.delete_cookie(SESSION_COOKIE, path=auth_path or "/")
        return resp

    @bp.post(f"{auth_path}/approve")
    def approve() -> Any:
        rid = request.form.get("rid", "")
        req = az.load_pending(db, rid)
        sid = request.cookies.get(SESSION_COOKIE)
        user = az.session_user(db, sid)
        if req is None or user is None or sid is None:
            return Response(error_page("invalid_request", "Session or request expired"), 400,
                            mimetype="text/html")
        if request.form.get("csrf") != az.csrf_token(sid, rid):
            audit_event("authorize", OUTCOME_DENIED, "approval form failed the CSRF check",
                        req.client_id)
            return Response(error_page("invalid_request", "Form check failed"), 400,
                            mimetype="text/html")
        deny = az.AuthorizeError("access_denied", "The user denied the request",
                                 req.redirect_uri, req.state)
        if request.form.get("decision") != "approve":
            az.drop_pending(db, rid)
            audit_event("authorize", OUTCOME_DENIED, "user denied", req.client_id)
            return redirect(deny.location(), 302)
        if req.launch and req.launch.get("username") != user.username:
            az.drop_pending(db, rid)
            audit_event("authorize", OUTCOME_DENIED, "launch belongs to another user",
                        req.client_id)
            deny.description = "The launch was started by another user"
            return redirect(deny.location(), 302)
        patient = None
        if req.needs_patient and user.patient_id is None:
            patient = request.form.get("patient", "")
            found = {p.get("id") for p in patient_lookup(user, request.form.get("q", ""))}
            if not patient or patient not in found:
                return Response(error_page("invalid_request", "Choose a patient"), 400,
                                mimetype="text/html")
        location = az.issue_code(db, current_urls(), req, user, patient)
        audit_event("authorize", OUTCOME_SUCCESS, f"code issued for {user.username}",
                    req.client_id)
        return redirect(location, 302)

    # -- EHR launch -------------------------------------------------------------------
    @bp.route(f"{auth_path}/launch", methods=["GET", "POST"])
    def launch() -> Any:
        user = az.session_user(db, request.cookies.get(SESSION_COOKIE))
        if user is None:
            here = f"{auth_path}/launch?" + urlencode(list(request.values.items(multi=True)))
            return _html(login_page(f"{auth_path}/login", here), 401)
        if user.patient_id is not None:
            audit_event("launch", OUTCOME_DENIED,
                        f"patient account {user.username} may not start an EHR launch")
            return Response(error_page("access_denied", "A patient account cannot launch "
                                       "apps for other patients"), 403, mimetype="text/html")
        with db.read() as conn:
            client = get_client(conn, request.values.get("client_id", ""))
        if client is None or not client.launch_uri:
            return Response(error_page("invalid_request", "Unknown client or no launch URI"),
                            400, mimetype="text/html")
        patient = request.values.get("patient") or None
        encounter = request.values.get("encounter") or None
        refs = [ref for ref in request.values.getlist("context") if ref]
        bad = [v for v in [patient, encounter] if v and not _ID.match(v)] + [
            r for r in refs if not _REF.match(r) or r.split("/")[0] in ("Patient", "Encounter")]
        if bad:
            return Response(error_page("invalid_request", f"Invalid launch context: {bad[0]}"),
                            400, mimetype="text/html")
        wanted = ([f"Patient/{patient}"] if patient else []) + (
            [f"Encounter/{encounter}"] if encounter else []) + refs
        hidden = hidden_references(user, wanted) if wanted else []
        if hidden:  # the same answer for hidden and missing: nothing leaks
            audit_event("launch", OUTCOME_DENIED,
                        f"{user.username} launch context not readable: {hidden[0]}",
                        client.client_id)
            return Response(error_page("invalid_request",
                                       f"Unknown launch context: {hidden[0]}"),
                            400, mimetype="text/html")
        contexts = [{"reference": ref} for ref in refs]
        handle = az.create_launch(db, user, client.client_id, patient, encounter, contexts,
                                  request.values.get("intent") or None)
        audit_event("launch", OUTCOME_SUCCESS,
                    f"{user.username} launched {client.client_id} for patient {patient}",
                    client.client_id)
        iss = current_urls().fhir_base
        target = az.append_query(client.launch_uri, {"iss": iss, "launch": handle})
        if request.accept_mimetypes.best == "application/json":
            return jsonify({"launch": handle, "launch_url": target, "iss": iss})
        return redirect(target, 302)

    # -- token, introspection, revocation ------------------------------------------
    def oauth_error(exc: OAuthError, client_id: str | None, kind: str) -> Response:
        audit_event(kind, OUTCOME_DENIED, f"{exc.error}: {exc.description}", client_id)
        resp = jsonify(exc.body())
        resp.status_code = exc.status
        resp.headers.update(NO_STORE)
        if exc.status == 401:
            resp.headers["WWW-Authenticate"] = 'Basic realm="token", error="invalid_client"'
        return resp

    def audit_grant(conn: Connection, client: Client, grant_type: str, scope: str) -> None:
        event = build_audit_event(None, "token", OUTCOME_SUCCESS, client_id=client.client_id,
                                  description=f"{grant_type} granted: {scope}",
                                  address=request.remote_addr, authentication=True)
        if audit is None:
            insert_audit(conn, event)  # same transaction as the token itself
        else:
            sink(event)

    service = TokenService(db, fetcher, audit_grant)

    def allow_registered_origin(resp: Response, client_id: str | None) -> Response:
        """CORS for browser apps: echo Origin when it is one of the client's redirect
        origins (SMART: registered origins only on the token endpoint)."""
        origin = request.headers.get("Origin")
        if origin and client_id:
            with db.read() as conn:
                client = get_client(conn, client_id)
            origins = {_origin(u) for u in client.redirect_uris} if client else set()
            if origin in origins:
                resp.headers["Access-Control-Allow-Origin"] = origin
                resp.headers["Vary"] = "Origin"
        return resp

    @bp.post(f"{auth_path}/token")
    def token() -> Response:
        form = request.form.to_dict()
        try:
            _client, body = service.handle(form, request.headers, current_urls())
        except OAuthError as exc:
            resp = oauth_error(exc, form.get("client_id") or _assertion_iss(form), "token")
            return allow_registered_origin(resp, form.get("client_id"))
        resp = jsonify(body)
        resp.headers.update(NO_STORE)
        return allow_registered_origin(resp, form.get("client_id"))

    @bp.post(f"{auth_path}/introspect")
    def introspect_route() -> Response:
        form = request.form.to_dict()
        bearer = bearer_value(request.headers)
        try:
            if bearer is not None:
                with db.read() as conn:
                    own = lookup_token(conn, bearer, "access")
                    if own is None:
                        raise OAuthError("invalid_token", "Bearer token is not active", 401)
                    caller = get_client(conn, own.client_id)
            else:
                caller = authenticate_client(db, form, request.headers, current_urls().token,
                                             fetcher)
            if caller is None:
                raise OAuthError("invalid_token", "The caller's client is not active", 401)
            body = introspect(db, current_urls(), form.get("token", ""),
                              caller=caller.client_id,
                              resource_server=caller.resource_server)
        except OAuthError as exc:
            return oauth_error(exc, form.get("client_id"), "introspect")
        resp = jsonify(body)
        resp.headers.update(NO_STORE)
        return resp

    @bp.post(f"{auth_path}/revoke")
    def revoke_route() -> Response:
        form = request.form.to_dict()
        try:
            client = authenticate_client(db, form, request.headers, current_urls().token, fetcher)
        except OAuthError as exc:
            return oauth_error(exc, form.get("client_id"), "revoke")
        revoke(db, client, form.get("token", ""))
        audit_event("revoke", OUTCOME_SUCCESS, "token revocation", client.client_id)
        resp = Response("", 200)
        resp.headers.update(NO_STORE)
        return resp

    return bp


def _html(body: str, status: int = 200) -> Response:
    resp = Response(body, status, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'unsafe-inline'"
    return resp


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _assertion_iss(form: dict[str, str]) -> str | None:
    """The (unverified) `iss` of a client assertion, for the audit trail only."""
    import base64
    import json

    try:
        part = form.get("client_assertion", "").split(".")[1]
        return str(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))["iss"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None
