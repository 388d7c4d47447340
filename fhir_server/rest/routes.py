"""The FHIR REST adapter: one catch-all Flask route under /fhir that turns the HTTP request
into a `route_table.Request` and dispatches it through the route table
(`fhir_server/interactions/route_table.py`), so unknown paths get 404, wrong methods 405,
always as OperationOutcomes. No SQL and no transactions here: the interactions open them.
Idempotent retries (Idempotency-Key / X-Request-Id) are answered here from what the write
remembered."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from fhir_server.errors import FhirError
from fhir_server.interactions import access, route_table
from fhir_server.interactions.context import Call, Services, new_budget
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.results import Result
from fhir_server.rest import idempotency, io

bp = Blueprint("fhir", __name__)


def services() -> Services:
    return current_app.extensions["fhir_services"]


def operations() -> OperationRegistry:
    return services().operations


def base_url() -> str:
    configured = services().settings.base_url
    if configured:
        return configured.rstrip("/")
    return request.host_url.rstrip("/") + "/fhir"


def make_call() -> Call:
    prefs = io.prefer(request)
    return Call(
        request_budget=new_budget(services().settings),
        services=services(),
        base_url=base_url(),
        access=getattr(request, "fhir_access", None) or default_access(),
        prefer_return=prefs.get("return", "representation"),
        strict_handling=prefs.get("handling") == "strict",
    )


def default_access():  # type: ignore[no-untyped-def]
    """Without a token-derived context: the development context when auth is off."""
    from fhir_server.auth.context import DEVELOPMENT

    return DEVELOPMENT if services().settings.auth_mode == "off" else None


def query_params() -> list[tuple[str, str]]:
    """Query parameters in order, repeated keys kept (AND semantics)."""
    return list(request.args.items(multi=True))


def fhir_request(call: Call, path: str) -> route_table.Request:
    """The HTTP request as the route table sees it (the body read only when needed, as the
    route's root element: the resource type, Bundle or Parameters)."""
    method = request.method if request.method != "HEAD" else "GET"
    params = query_params()
    if method == "POST" and path.rstrip("/").endswith("_search"):
        content_type = request.headers.get("Content-Type", "")
        if content_type and not content_type.startswith("application/x-www-form-urlencoded"):
            raise FhirError(415, "not-supported",
                            "POST _search requires application/x-www-form-urlencoded")
        params += list(request.form.items(multi=True))
    return route_table.Request(
        method=method, path=path,
        query=_criteria(request.query_string.decode()),
        params=[(k, v) for k, v in params if k != "_format"],
        body=lambda root: _body(call, root),
        patch=lambda root: _body(call, root, allow_patch=True),
        has_body=_has_body(),
        if_match=request.headers.get("If-Match"),
        if_none_match=request.headers.get("If-None-Match"),
        if_none_exist=request.headers.get("If-None-Exist"),
        if_modified_since_us=io.if_modified_since_us(request),
    )


@bp.route("/fhir", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"],
          strict_slashes=False)
@bp.route("/fhir/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
def dispatch(path: str = "") -> Response:
    call = make_call()
    try:
        fmt = io.wanted_format(request)
    except FhirError as not_acceptable:
        # Only an operation that serves this non-FHIR format may go on (e.g. text/csv).
        call.requested_raw_format = request.args.get("_format") or request.headers.get(
            "Accept")
        fmt = "json"
        if not path.rstrip("/").rsplit("/", 1)[-1].startswith("$"):
            raise not_acceptable
    recorder = _idempotency_recorder(call, fmt)
    if recorder is not None:
        replayed = recorder.replay()
        if replayed is not None:
            return replayed
        call.response_recorder = recorder
    try:
        req = fhir_request(call, path)
        result = route_table.dispatch(call, req)
        if req.method == "GET":
            access.audit_reads(call, route_table.read_interaction(req.segments), result,
                               request.query_string.decode(errors="replace"),
                               request.remote_addr)
    finally:
        access.flush_audit(call)
    response = recorder.response if recorder is not None else None
    if response is None:
        response = _render(call, result, fmt)
    if recorder is not None:
        recorder.after(response)
    return response


def _render(call: Call, result: Result, fmt: str) -> Response:
    if result.raw is not None:
        body, content_type = result.raw
        return Response(body, status=result.status, content_type=content_type)
    if call.requested_raw_format is not None:
        raise FhirError(406, "not-supported",
                        f"Cannot serve '{call.requested_raw_format}' for this request")
    return io.render_result(result, fmt, call.base_url, call.prefer_return)


def _idempotency_recorder(call: Call, fmt: str) -> idempotency.Recorder | None:
    """For a write with an Idempotency-Key / X-Request-Id: what remembers its response."""
    key = idempotency.key_of(request)
    if key is None:
        return None
    body = io.body_bytes(request, "Resource") if _has_body() else b""
    return idempotency.Recorder(call, key, idempotency.fingerprint(request, body),
                                lambda result: _render(call, result, fmt))


def _body(call: Call, root: str = "Resource", *, allow_patch: bool = False) -> Any:
    return io.read_body(request, call.settings.max_body_bytes, allow_patch=allow_patch,
                        limits=io.body_limits(call.settings), root=root)


def _has_body() -> bool:
    """Whether the request carries a body (a length, or chunked transfer)."""
    return bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


def _criteria(query: str) -> str:
    """Conditional criteria: the query string without _format."""
    parts = [p for p in query.split("&") if p and not p.startswith("_format=")]
    return "&".join(parts)
