"""The one route table: (method, URL pattern) -> interaction.

The HTTP layer (`rest/routes.py`) and Bundle entries (`bundles.py`) both dispatch through
`dispatch`, so a read, vread or search inside a Bundle is the same interaction as over HTTP.
Over HTTP each interaction opens its own database transaction; a Bundle entry runs on the
Bundle's open connection (`conn`), and routes that cannot (operations, history, nested
Bundles, metadata) are refused inside a Bundle with 400.

Patterns are lists of segment kinds: a literal (`metadata`, `_history`, `_search`), `TYPE`
(a resource type), `ID`, `OP` (`$name`) and `VID` (a version).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.interactions import (
    access,
    audit_events,
    crud,
    operation_definitions,
    request_text,
)
from fhir_server.interactions.context import Call
from fhir_server.interactions.history import history
from fhir_server.interactions.operations import Operation
from fhir_server.interactions.results import Result
from fhir_server.resource_types import is_resource_type
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository

TYPE, ID, OP, VID = "TYPE", "ID", "OP", "VID"


@dataclass
class Request:
    """A FHIR REST request, from HTTP or from a Bundle entry."""

    method: str
    path: str  # relative to the FHIR base, without query
    query: str = ""  # the raw query string (conditional criteria), without `_format`
    params: list[tuple[str, str]] = field(default_factory=list)  # repeated keys kept
    # the body, read when needed as the route's root element (a type, Bundle, Parameters)
    body: Callable[[str], Any] = lambda root: None
    has_body: bool = True  # False: no request body was sent
    patch: Callable[[str], Any] = lambda root: None  # the JSON Patch operations of a PATCH
    if_match: str | None = None
    if_none_match: str | None = None
    if_none_exist: str | None = None
    if_modified_since_us: int | None = None
    # set by a transaction Bundle for its entries
    new_id: str | None = None  # the id it assigned to a created resource (urn:uuid targets)
    validated: bool = False  # the body was base-validated while the Bundle was prepared

    @property
    def segments(self) -> list[str]:
        return [s for s in self.path.split("/") if s]


@dataclass(frozen=True)
class Args:
    """What the pattern captured."""

    res_type: str | None = None
    res_id: str | None = None
    op: str | None = None
    version: str | None = None
    compartment_type: str | None = None  # `Patient/1/Task`: the searched type is res_type


# handler(call, request, captured args, open connection or None) -> Result
Handler = Callable[[Call, Request, Args, Connection | None], Result]


@dataclass(frozen=True)
class Route:
    pattern: tuple[str, ...]
    handlers: dict[str, Handler]
    in_bundle: bool = True  # may run as a Bundle entry (on the Bundle's connection)
    reads: str = "search-type"  # the interaction a GET here is (for the audit log)


# -- handlers ------------------------------------------------------------------------------
def _search(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    from fhir_server.interactions.search import search

    compartment = (a.compartment_type, a.res_id) if a.compartment_type and a.res_id else None
    return search(call, a.res_type, req.params, compartment=compartment, conn=conn)


def _transaction_or_batch(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    """POST [base]: a batch or transaction Bundle, whose entries come back through
    `dispatch` (the Bundle processor is installed by wiring: `Services.bundles`)."""
    if call.services.bundles is None:
        raise FhirError(405, "not-supported", "Bundles are not accepted here",
                        headers={"Allow": "GET"})
    return call.services.bundles(call, req.body("Bundle"))


def _metadata(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    from fhir_server.interactions.capability import capability_statement

    return Result(200, resource=capability_statement(call, call.services.operations))


def _history(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    return history(call, req.params, res_type=a.res_type, res_id=a.res_id)


def _operation(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    """`$name` at system, type or instance level: 404 when it does not exist there, 405 for
    another method, 406 for a raw format it cannot give; the access check the operation
    declares runs first (on the instance, in a read transaction, or on the type). The
    handler opens the transactions it needs."""
    level = "instance" if a.res_id else "type" if a.res_type else "system"
    name = a.op or ""
    op = call.services.operations.find(name, level, a.res_type)
    raw = call.requested_raw_format
    if op is not None and raw is not None and raw.split(";")[0].strip() not in op.raw_formats:
        raise FhirError(406, "not-supported", f"${name} cannot return '{raw}'")
    if op is None:
        raise FhirError(404, "not-supported", f"Operation ${name} is not supported at "
                        f"{level} level" + (f" for {a.res_type}" if a.res_type else ""))
    if req.method not in op.methods:
        raise FhirError(405, "not-supported", f"Method {req.method} is not allowed here",
                        headers={"Allow": ", ".join(sorted(op.methods))})
    body = req.body("Parameters") if req.method == "POST" and req.has_body else None
    if body is not None:
        _check_operation_body(body)
    if level == "instance" and op.affects_state:  # version-aware, e.g. $redirect
        call.if_match_version = crud.require_etag(req.if_match)
    body, params = _operation_input(op, req.method, body, req.params)
    if level == "instance" and op.instance_interaction and a.res_type and a.res_id:
        access.check_type(call, op.instance_interaction, a.res_type)
        with call.db.read() as c:
            target = Repository(c).read(a.res_type, a.res_id)
            if target is None or target.deleted:
                raise FhirError(404, "not-found", f"{a.res_type}/{a.res_id} is not known")
            access.check_existing(c, call, op.instance_interaction, target)
    elif level == "type" and op.type_interaction:
        access.check_type(call, op.type_interaction, a.res_type)
    return op.handler(call, a.res_type, a.res_id, params, body)


def _operation_input(op: Operation, method: str, body: Any, params: list[tuple[str, str]]
                     ) -> tuple[Any, list[tuple[str, str]]]:
    """The form the handler reads: GET's query as a Parameters body typed by the published
    OperationDefinition, or a POSTed Parameters body of primitives as query parameters."""
    if method == "GET" and op.reads == "parameters":
        definition = operation_definitions.by_url(op.definition)
        if definition is None:
            raise FhirError(405, "not-supported", f"${op.name} takes a POSTed Parameters body",
                            headers={"Allow": "POST"})
        query = [(k, v) for k, v in params if k != "_format"]
        return operation_definitions.parameters_from_query(definition, query), []
    if method == "POST" and op.reads == "query" and body is not None:
        return None, params + operation_definitions.query_from_parameters(body)
    return body, params


def _audit_events(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    """The audit log (`AuditEvent`, `AuditEvent/[id]`): a store of its own, read-only."""
    return audit_events.route(call, req.method, a.res_id, req.params)


def _check_operation_body(body: Any) -> None:
    """An operation's input is a resource; a Parameters resource must be valid R4 before any
    operation reads it (`"parameter": "x"` is a 400 naming Parameters.parameter)."""
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "The body of an operation must be a FHIR resource "
                        "(usually Parameters)", "Parameters")
    if body.get("resourceType") == "Parameters":
        crud.check_valid(body, "Parameters")


def _create(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None
    body = req.body(a.res_type)
    if conn is None:
        return crud.create(call, a.res_type, body, if_none_exist=req.if_none_exist)
    resource = body if req.validated else crud.check_valid(body, a.res_type, call=call)
    return crud.create_in(conn, call, a.res_type, resource, if_none_exist=req.if_none_exist,
                          res_id=req.new_id)


def _read(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None and a.res_id is not None
    return crud.read(call, a.res_type, a.res_id, if_none_match=req.if_none_match,
                     if_modified_since_us=req.if_modified_since_us, conn=conn)


def _vread(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None and a.res_id is not None and a.version is not None
    return crud.vread(call, a.res_type, a.res_id, a.version, conn=conn)


def _update(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None and a.res_id is not None
    body = req.body(a.res_type)
    if conn is None:
        return crud.update(call, a.res_type, a.res_id, body, if_match=req.if_match)
    resource = body if req.validated else crud.check_valid(body, a.res_type, a.res_id, call=call)
    return crud.store_update(conn, call, a.res_type, a.res_id, resource,
                             crud.require_etag(req.if_match), "PUT")


def _conditional_update(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None
    body = req.body(a.res_type)
    if conn is None:
        return crud.conditional_update(call, a.res_type, req.query, body,
                                       if_match=req.if_match)
    return crud.conditional_update_in(conn, call, a.res_type, req.query,
                                      crud.check_valid(body, a.res_type, call=call),
                                      crud.require_etag(req.if_match))


def _patch(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None and a.res_id is not None
    if conn is None:
        return crud.patch(call, a.res_type, a.res_id, req.patch(a.res_type), if_match=req.if_match)
    return crud.patch_in(conn, call, a.res_type, a.res_id, req.patch(a.res_type),
                         crud.require_etag(req.if_match))


def _conditional_patch(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None
    if conn is None:
        return crud.conditional_patch(call, a.res_type, req.query, req.patch(a.res_type),
                                      if_match=req.if_match)
    res_id = crud.single_match(conn, call, a.res_type, req.query, "patch")
    return crud.patch_in(conn, call, a.res_type, res_id, req.patch(a.res_type),
                         crud.require_etag(req.if_match))


def _delete(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None and a.res_id is not None
    if conn is None:
        return crud.delete(call, a.res_type, a.res_id, if_match=req.if_match)
    return crud.delete_in(conn, call, a.res_type, a.res_id, crud.require_etag(req.if_match))


def _conditional_delete(call: Call, req: Request, a: Args, conn: Connection | None) -> Result:
    assert a.res_type is not None
    if conn is None:
        return crud.conditional_delete(call, a.res_type, req.query)
    return crud.conditional_delete_in(conn, call, a.res_type, req.query)


# the operation itself says which methods it takes (405 with its own Allow otherwise)
_OPERATION: dict[str, Handler] = dict.fromkeys(("GET", "POST", "PUT", "DELETE", "PATCH"),
                                               _operation)
# the audit log answers every method itself (405 for anything but GET)
_AUDIT: dict[str, Handler] = dict.fromkeys(("GET", "POST", "PUT", "DELETE", "PATCH"),
                                           _audit_events)

#: The route table; the first pattern that fits wins (literals before ids).
ROUTES: tuple[Route, ...] = (
    Route((), {"GET": _search, "POST": _transaction_or_batch}, in_bundle=False,
          reads="search-system"),
    Route(("metadata",), {"GET": _metadata}, in_bundle=False),
    Route(("_history",), {"GET": _history}, in_bundle=False, reads="history-system"),
    Route(("_search",), {"POST": _search}, in_bundle=False),
    Route((OP,), _OPERATION, in_bundle=False, reads="operation"),
    Route(("AuditEvent",), _AUDIT, in_bundle=False),
    Route((TYPE,), {"GET": _search, "POST": _create, "PUT": _conditional_update,
                    "DELETE": _conditional_delete, "PATCH": _conditional_patch}),
    Route((TYPE, "_search"), {"POST": _search}, in_bundle=False),
    Route((TYPE, "_history"), {"GET": _history}, in_bundle=False, reads="history-type"),
    Route((TYPE, OP), _OPERATION, in_bundle=False, reads="operation"),
    # after the literals above: any other second segment is an id
    Route(("AuditEvent", ID), _AUDIT, in_bundle=False, reads="read"),
    Route((TYPE, ID), {"GET": _read, "PUT": _update, "DELETE": _delete, "PATCH": _patch},
          reads="read"),
    Route((TYPE, ID, "_history"), {"GET": _history}, in_bundle=False,
          reads="history-instance"),
    Route((TYPE, ID, "_history", VID), {"GET": _vread}, reads="vread"),
    Route((TYPE, ID, OP), _OPERATION, in_bundle=False, reads="operation"),
    Route((TYPE, ID, TYPE), {"GET": _search}),  # compartment search: Patient/1/Task
)


def _captures(pattern: tuple[str, ...], segments: list[str]) -> Args | None:
    """The captured args when the segments fit the pattern, else None."""
    if len(pattern) != len(segments):
        return None
    values: dict[str, str] = {}
    types: list[str] = []
    for kind, seg in zip(pattern, segments, strict=True):
        if kind == TYPE:
            if not is_resource_type(seg):
                return None
            types.append(seg)
        elif kind == ID:
            if seg.startswith("$"):
                return None
            values["res_id"] = seg
        elif kind == OP:
            if not seg.startswith("$"):
                return None
            values["op"] = seg[1:]
        elif kind == VID:
            values["version"] = seg
        elif seg != kind:
            return None
    if len(types) == 2:  # compartment: owner type, then the searched type
        return Args(res_type=types[1], compartment_type=types[0], **values)
    return Args(res_type=types[0] if types else None, **values)


def find_route(segments: list[str]) -> tuple[Route, Args]:
    """The route and captured args for a path (404 when no pattern fits)."""
    for route in ROUTES:
        args = _captures(route.pattern, segments)
        if args is not None:
            return route, args
    head = segments[0] if segments else ""
    if head and not head.startswith(("$", "_")) and head != "metadata" \
            and not is_resource_type(head):
        raise FhirError(404, "not-supported", f"Unknown resource type '{head}'")
    raise FhirError(404, "not-found", f"No FHIR endpoint at /{'/'.join(segments)}")


def read_interaction(segments: list[str]) -> str:
    """The interaction a GET on these path segments is (for the audit log)."""
    route, _ = find_route(segments)
    return route.reads


def dispatch(call: Call, req: Request, conn: Connection | None = None) -> Result:
    """Run the interaction the request names. With `conn` (a Bundle entry), on that open
    connection; routes that need their own transaction are refused there."""
    request_text.refuse_control_in_path(req.path)
    request_text.refuse_control_in_params(req.params)
    route, args = find_route(req.segments)
    handler = route.handlers.get(req.method)
    if handler is None:
        allowed = ", ".join(sorted(route.handlers))
        raise FhirError(405, "not-supported", f"Method {req.method} is not allowed here",
                        headers={"Allow": allowed})
    if conn is not None and not route.in_bundle:
        raise FhirError(400, "not-supported",
                        f"{req.method} {req.path} is not supported inside a Bundle")
    return handler(call, req, args, conn)
