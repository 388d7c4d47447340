"""The FHIR REST router: one catch-all route under /fhir dispatching on path shape and
method, so unknown paths get 404, wrong methods 405, always as OperationOutcomes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, request

from fhir_server.errors import FhirError
from fhir_server.interactions import access, audit_events, crud
from fhir_server.interactions.context import Call, Services, new_budget
from fhir_server.interactions.history import history
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.results import Result
from fhir_server.resource_types import is_resource_type
from fhir_server.rest import idempotency, io
from fhir_server.storage.repository import Repository

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
    segments = [s for s in path.split("/") if s]
    recorder = _idempotency_recorder(call, fmt)
    if recorder is not None:
        replayed = recorder.replay()
        if replayed is not None:
            return replayed
        call.response_recorder = recorder
    method = request.method if request.method != "HEAD" else "GET"
    try:
        result = route(call, method, segments)
        if method == "GET" and isinstance(result, Result):
            access.audit_reads(call, read_interaction(segments), result,
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


def read_interaction(seg: list[str]) -> str:
    """The interaction a GET on these path segments is (for the audit log)."""
    if not seg:
        return "search-system"
    last = seg[-1]
    if last.startswith("$"):
        return "operation"
    if "_history" in seg:
        return {1: "history-system", 2: "history-type", 3: "history-instance"}.get(
            len(seg), "vread")
    return {1: "search-type", 2: "read"}.get(len(seg), "search-type")


def _not_allowed(method: str, allowed: str) -> FhirError:
    return FhirError(405, "not-supported", f"Method {method} is not allowed here",
                     headers={"Allow": allowed})


def _body(call: Call, root: str = "Resource", *, allow_patch: bool = False) -> Any:
    return io.read_body(request, call.settings.max_body_bytes, allow_patch=allow_patch,
                        limits=io.body_limits(call.settings), root=root)


def route(call: Call, method: str, seg: list[str]) -> Result | Response:
    """Dispatch (method, path segments) to an interaction."""
    n = len(seg)
    if n == 0:
        return _system(call, method)
    head = seg[0]
    if head == "metadata" and n == 1:
        if method != "GET":
            raise _not_allowed(method, "GET")
        from fhir_server.interactions.capability import capability_statement

        return Result(200, resource=capability_statement(call, operations()))
    if head == "_history" and n == 1:
        if method != "GET":
            raise _not_allowed(method, "GET")
        return history(call, query_params())
    if head == "_search" and n == 1:
        if method != "POST":
            raise _not_allowed(method, "POST")
        return _search(call, None, form=True)
    if head.startswith("$") and n == 1:
        return _operation(call, method, head[1:], "system", None, None)
    if not is_resource_type(head):
        raise FhirError(404, "not-supported", f"Unknown resource type '{head}'")
    if head == "AuditEvent" and (n == 1 or (n == 2 and not seg[1].startswith(("$", "_")))):
        return audit_events.route(call, method, seg[1] if n == 2 else None,
                                  [(k, v) for k, v in query_params() if k != "_format"])
    res_type = head
    if n == 1:
        return _type_level(call, method, res_type)
    second = seg[1]
    if n == 2 and second == "_search":
        if method != "POST":
            raise _not_allowed(method, "POST")
        return _search(call, res_type, form=True)
    if n == 2 and second == "_history":
        if method != "GET":
            raise _not_allowed(method, "GET")
        return history(call, query_params(), res_type=res_type)
    if second.startswith("$") and n == 2:
        return _operation(call, method, second[1:], "type", res_type, None)
    res_id = second
    if n == 2:
        return _instance(call, method, res_type, res_id)
    third = seg[2]
    if third == "_history":
        if method != "GET":
            raise _not_allowed(method, "GET")
        if n == 3:
            return history(call, query_params(), res_type=res_type, res_id=res_id)
        if n == 4:
            return crud.vread(call, res_type, res_id, seg[3])
    if third.startswith("$") and n == 3:
        return _operation(call, method, third[1:], "instance", res_type, res_id)
    if n == 3 and is_resource_type(third):
        if method != "GET":
            raise _not_allowed(method, "GET")
        return _search(call, third, compartment=(res_type, res_id))
    raise FhirError(404, "not-found", f"No FHIR endpoint at /{'/'.join(seg)}")


def _system(call: Call, method: str) -> Result:
    if method == "GET":
        return _search(call, None)
    if method == "POST":
        from fhir_server.interactions.bundles import process_bundle

        return process_bundle(call, _body(call, "Bundle"))
    raise _not_allowed(method, "GET, POST")


def _type_level(call: Call, method: str, res_type: str) -> Result:
    query = request.query_string.decode()
    if method == "GET":
        return _search(call, res_type)
    if method == "POST":
        return crud.create(call, res_type, _body(call, res_type),
                           if_none_exist=request.headers.get("If-None-Exist"))
    if method == "PUT":
        return crud.conditional_update(call, res_type, _criteria(query), _body(call, res_type),
                                       if_match=request.headers.get("If-Match"))
    if method == "DELETE":
        return crud.conditional_delete(call, res_type, _criteria(query))
    if method == "PATCH":
        ops = _body(call, res_type, allow_patch=True)
        return crud.conditional_patch(call, res_type, _criteria(query), ops,
                                      if_match=request.headers.get("If-Match"))
    raise _not_allowed(method, "GET, POST, PUT, DELETE, PATCH")


def _criteria(query: str) -> str:
    """Conditional criteria: the query string without _format."""
    parts = [p for p in query.split("&") if p and not p.startswith("_format=")]
    return "&".join(parts)


def _instance(call: Call, method: str, res_type: str, res_id: str) -> Result:
    if method == "GET":
        return crud.read(call, res_type, res_id,
                         if_none_match=request.headers.get("If-None-Match"),
                         if_modified_since_us=io.if_modified_since_us(request))
    if method == "PUT":
        return crud.update(call, res_type, res_id, _body(call, res_type),
                           if_match=request.headers.get("If-Match"))
    if method == "DELETE":
        return crud.delete(call, res_type, res_id, if_match=request.headers.get("If-Match"))
    if method == "PATCH":
        ops = _body(call, res_type, allow_patch=True)
        return crud.patch(call, res_type, res_id, ops, if_match=request.headers.get("If-Match"))
    raise _not_allowed(method, "GET, PUT, DELETE, PATCH")


def _search(call: Call, res_type: str | None, *, form: bool = False,
            compartment: tuple[str, str] | None = None) -> Result:
    from fhir_server.interactions.search import search_bundle

    params = query_params()
    if form:
        content_type = request.headers.get("Content-Type", "")
        if content_type and not content_type.startswith("application/x-www-form-urlencoded"):
            raise FhirError(415, "not-supported",
                            "POST _search requires application/x-www-form-urlencoded")
        params += list(request.form.items(multi=True))
    params = [(k, v) for k, v in params if k != "_format"]
    level = "search-type" if res_type else "search-system"
    access.check_type(call, level, res_type)
    with call.db.read() as conn:
        if compartment is not None:
            owner = Repository(conn).read(*compartment)
            if owner is None or owner.deleted:
                raise FhirError(404, "not-found", f"{compartment[0]}/{compartment[1]} is not known")
            access.check_existing(conn, call, "read", owner)
        bundle = search_bundle(conn, res_type, params, base_url=call.base_url,
                               strict=call.strict_handling, compartment=compartment,
                               restrict=access.restriction(conn, call, level),
                               limits=call.search_limits, budget=call.budget)
    return Result(200, resource=bundle)


def _check_operation_body(body: Any) -> None:
    """An operation's input is a resource; a Parameters resource must be valid R4 before any
    operation reads it (`"parameter": "x"` is a 400 naming Parameters.parameter)."""
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "The body of an operation must be a FHIR resource "
                        "(usually Parameters)", "Parameters")
    if body.get("resourceType") == "Parameters":
        crud.check_valid(body, "Parameters")


def _has_body() -> bool:
    """Whether the request carries a body (a length, or chunked transfer)."""
    return bool(request.content_length) or "chunked" in request.headers.get(
        "Transfer-Encoding", "").lower()


def _operation(call: Call, method: str, name: str, level: str, res_type: str | None,
               res_id: str | None) -> Result:
    op = operations().find(name, level, res_type)
    if op is not None and call.requested_raw_format is not None and (
            call.requested_raw_format.split(";")[0].strip() not in op.raw_formats):
        raise FhirError(406, "not-supported",
                        f"${name} cannot return '{call.requested_raw_format}'")
    if op is None:
        raise FhirError(404, "not-supported", f"Operation ${name} is not supported at "
                        f"{level} level" + (f" for {res_type}" if res_type else ""))
    if method not in op.methods:
        raise _not_allowed(method, ", ".join(sorted(op.methods)))
    body = _body(call, "Parameters") if method == "POST" and _has_body() else None
    if body is not None:
        _check_operation_body(body)
    params = [(k, v) for k, v in query_params() if k != "_format"]
    if level == "instance" and op.instance_interaction and res_type and res_id:
        access.check_type(call, op.instance_interaction, res_type)
        with call.db.read() as conn:
            target = Repository(conn).read(res_type, res_id)
            if target is None or target.deleted:
                raise FhirError(404, "not-found", f"{res_type}/{res_id} is not known")
            access.check_existing(conn, call, op.instance_interaction, target)
    elif level == "type" and op.type_interaction:
        access.check_type(call, op.type_interaction, res_type)
    return op.handler(call, res_type, res_id, params, body)
