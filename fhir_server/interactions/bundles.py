"""Batch and transaction Bundles (POST /fhir).

Transaction: one database transaction for the whole Bundle. Entries are processed in the
order the spec requires (DELETE, POST, PUT/PATCH, GET); references are resolved first as R4
"Resolving references in Bundles" says (`urn:uuid:`/`urn:oid:` and absolute fullUrls, relative
references such as `Patient/p1` against the base of the referring entry's fullUrl, conditional
references by search) and every reference is rewritten; any failing entry rolls everything
back, and the one OperationOutcome has an issue for every failing entry, each naming
`Bundle.entry[n]`.
Batch: every entry independent, in its own transaction, with its own status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.interactions import crud, route_table
from fhir_server.interactions.conditional import matching_ids, parse_criteria
from fhir_server.interactions.context import Call
from fhir_server.interactions.references import collect_references, rewrite_references
from fhir_server.interactions.results import Result
from fhir_server.json_tree import copy_tree
from fhir_server.resource_types import is_resource_type
from fhir_server.storage.repository import format_instant, new_id, now_us
from profiles.bundle_rules import RESTFUL_URL, full_url_issues
from profiles.r4model import REL_REF

METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    """One request entry with what resolution decided for it."""

    index: int
    method: str
    url: str
    res_type: str
    res_id: str | None
    query: str
    resource: Any
    full_url: str | None
    request: dict
    target_id: str | None = None  # the id this entry's resource will have (POST/PUT)
    existing: Any = None  # StoredResource when a conditional create matched
    result: Result | None = None
    extra: dict = field(default_factory=dict)
    validated: bool = False  # base validation done while preparing


def process_bundle(call: Call, bundle: Any) -> Result:
    """POST /fhir with a batch or transaction Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FhirError(400, "invalid", "POST to the base URL needs a Bundle", "Bundle")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise FhirError(400, "invalid",
                        f"Bundle.type must be 'transaction' or 'batch', not '{kind}'",
                        "Bundle.type")
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise FhirError(400, "structure", "Bundle.entry must be an array", "Bundle.entry")
    limit = call.settings.max_bundle_entries
    if len(raw_entries) > limit:
        raise FhirError(413, "too-costly",
                        f"The Bundle has {len(raw_entries)} entries; the limit is {limit}",
                        "Bundle.entry")
    if kind == "batch":
        return _batch(call, raw_entries)
    return _transaction(call, raw_entries)


# -- parsing ---------------------------------------------------------------------------
def _parse_entry(i: int, raw: Any, call: Call) -> Entry:
    where = f"Bundle.entry[{i}]"
    if not isinstance(raw, dict):
        raise FhirError(400, "structure", f"{where} must be an object", where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise FhirError(400, "required", f"{where} has no request", f"{where}.request")
    method = str(request.get("method", "")).upper()
    if method not in METHOD_ORDER:
        raise FhirError(400, "invalid", f"{where}.request.method '{method}' is not supported",
                        f"{where}.request.method")
    url = request.get("url")
    if not isinstance(url, str) or not url:
        raise FhirError(400, "required", f"{where}.request.url is missing", f"{where}.request.url")
    for name in ("ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince"):
        if name in request and not isinstance(request[name], str):
            raise FhirError(400, "structure", f"{where}.request.{name} must be a string",
                            f"{where}.request.{name}")
    url = _relative(url, call.base_url)
    path, _, query = url.partition("?")
    segments = [s for s in path.split("/") if s]
    if not segments or not (is_resource_type(segments[0]) or segments[0].startswith(("$", "_"))
                            or segments[0] == "metadata"):
        raise FhirError(404, "not-supported", f"{where}.request.url '{url}' names no known "
                        "resource type", f"{where}.request.url")
    res_type = segments[0]
    res_id = segments[1] if len(segments) > 1 else None
    resource = raw.get("resource")
    if method in ("POST", "PUT"):
        if not isinstance(resource, dict):
            raise FhirError(400, "required", f"{where} ({method}) has no resource",
                            f"{where}.resource")
        if method == "POST" and len(segments) != 1:
            raise FhirError(400, "invalid", f"{where}: POST url must be a resource type",
                            f"{where}.request.url")
        if method == "PUT" and not (len(segments) == 2 or (len(segments) == 1 and query)):
            raise FhirError(400, "invalid", f"{where}: PUT url must be Type/id or Type?criteria",
                            f"{where}.request.url")
    full_url = raw.get("fullUrl")
    if full_url is not None and not isinstance(full_url, str):
        raise FhirError(400, "structure", f"{where}.fullUrl must be a string", f"{where}.fullUrl")
    return Entry(i, method, url, res_type, res_id, query, resource, full_url, request)


def _relative(url: str, base_url: str) -> str:
    if url.startswith(base_url + "/"):
        return url[len(base_url) + 1:]
    if url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        return parts.path.split("/fhir/", 1)[-1] + (f"?{parts.query}" if parts.query else "")
    return url.lstrip("/")


def _entry_expression(where: str, expression: str) -> str:
    """`Task.status` in entry n -> `Bundle.entry[n].resource.status` (FHIRPath from the
    Bundle); request-level expressions (If-Match...) point at the entry itself."""
    if expression.startswith("Bundle."):
        return expression
    head, dot, rest = expression.partition(".")
    if head and head[0].isupper() and head.isalpha():
        return f"{where}.resource.{rest}" if dot else f"{where}.resource"
    return where


def _wrap(i: int, error: FhirError) -> FhirError:
    """Prefix an entry's error with its position so the client knows which one failed."""
    where = f"Bundle.entry[{i}]"
    issues = []
    for issue in error.issues:
        expressions = [_entry_expression(where, e) for e in issue.expression] or [where]
        issues.append(Issue(issue.severity, issue.code, f"{where}: {issue.diagnostics}",
                            expressions))
    return FhirError(error.status, error.code, issues[0].diagnostics, issues=issues,
                     headers=error.headers)


def _combined(errors: list[FhirError]) -> FhirError:
    """One error for a rejected transaction: every failing entry's issues, in entry order."""
    if len(errors) == 1:
        return errors[0]
    statuses = {e.status for e in errors}
    status = errors[0].status if len(statuses) == 1 else 400
    issues = [issue for e in errors for issue in e.issues]
    return FhirError(status, errors[0].code, f"{len(errors)} entries of the transaction failed; "
                     f"first: {errors[0].diagnostics}", issues=issues)


# -- transaction -----------------------------------------------------------------------
def _transaction(call: Call, raw_entries: list) -> Result:
    entries = _prepare(call, raw_entries)  # no database work: outside the write transaction
    with call.write() as conn:
        _run(conn, call, entries)
        result = Result(200, resource=_response_bundle("transaction-response", entries, call))
        return crud.committing(call, conn, result)


def transaction_in(conn, call: Call, raw_entries: list) -> list[Entry]:  # type: ignore[no-untyped-def]
    """Process transaction entries inside an open database transaction (all or nothing is
    up to the caller's transaction). Returns the entries with their results, in order."""
    entries = _prepare(call, raw_entries)
    _run(conn, call, entries)
    return entries


def _prepare(call: Call, raw_entries: list) -> list[Entry]:
    """Parse the entries, copy their resources and base-validate those whose id is known
    (POST, PUT Type/id). None of this reads the database, so a server with several workers
    does it while another request holds SQLite's single write lock. Every failing entry is
    reported, not only the first."""
    entries = []
    errors: list[FhirError] = []
    for i, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(i, raw, call))
        except FhirError as exc:
            errors.append(_wrap(i, exc))
    for entry in entries:
        if entry.resource is not None:
            entry.resource = copy_tree(entry.resource)
    errors.extend(_full_url_errors(entries))
    for entry in entries:
        if entry.method == "POST" or (entry.method == "PUT" and entry.res_id):
            if entry.method == "PUT":
                entry.resource["id"] = entry.res_id
            try:
                crud.check_valid(entry.resource, entry.res_type, call=call)
            except FhirError as exc:
                errors.append(_wrap(entry.index, exc))
                continue
            entry.validated = True
    if errors:
        raise _combined(sorted(errors, key=_entry_order))
    return entries


def _entry_order(error: FhirError) -> int:
    expression = next((e for i in error.issues for e in i.expression), "")
    m = re.match(r"Bundle\.entry\[(\d+)\]", expression)
    return int(m.group(1)) if m else -1


def _run(conn, call: Call, entries: list[Entry]) -> None:  # type: ignore[no-untyped-def]
    """Resolve identities, rewrite references and execute the prepared entries. After a
    failing entry the others still run (the transaction is rolled back anyway) so that every
    failing entry is reported; an entry that refers to a failed one is not run."""
    mapping = _resolve_identities(conn, call, entries)
    _rewrite_all(conn, call, entries, mapping)
    outer = call.transaction_targets
    call.transaction_targets = outer | frozenset(  # entries may reference each other
        (e.res_type, e.target_id) for e in entries
        if e.method in ("POST", "PUT") and e.target_id)
    errors: list[FhirError] = []
    failed: set[str] = set()
    try:
        for entry in sorted(entries, key=lambda e: (METHOD_ORDER[e.method], e.index)):
            if failed and isinstance(entry.resource, dict) and \
                    failed & set(collect_references(entry.resource, [])):
                continue
            try:
                call.budget.check_time()
                entry.result = _execute(conn, call, entry)
            except FhirError as exc:
                errors.append(_wrap(entry.index, exc))
                if entry.target_id:
                    failed.add(f"{entry.res_type}/{entry.target_id}")
    finally:
        call.transaction_targets = outer
    if errors:
        raise _combined(sorted(errors, key=_entry_order))


def _full_url_errors(entries: list[Entry]) -> list[FhirError]:
    """fullUrl rules: absolute (http(s), a valid urn:uuid or urn:oid), agreeing with the
    resource's type and id when RESTful, and not used by two entries."""
    errors: list[FhirError] = []
    seen: dict[str, int] = {}
    for entry in entries:
        if entry.full_url is None:
            continue
        where = f"Bundle.entry[{entry.index}]"
        raw = {"fullUrl": entry.full_url}
        if entry.method != "POST" and isinstance(entry.resource, dict):
            raw["resource"] = entry.resource
        for issue in full_url_issues(raw, where):
            errors.append(FhirError(400, issue.code, f"{where}: {issue.diagnostics}",
                                    issues=[issue]))
        if entry.method in ("POST", "PUT"):
            if entry.full_url in seen:
                errors.append(FhirError(400, "invalid", f"{where}: fullUrl '{entry.full_url}' "
                                        f"is also used by Bundle.entry[{seen[entry.full_url]}]",
                                        f"{where}.fullUrl"))
            seen.setdefault(entry.full_url, entry.index)
    return errors


def _resolve_identities(conn, call: Call, entries: list[Entry]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Decide every POST/PUT entry's target id; map fullUrls to `Type/id`. Rejects two
    entries that resolve to the same resource."""
    mapping: dict[str, str] = {}
    identities: dict[str, int] = {}
    for entry in entries:
        where = f"Bundle.entry[{entry.index}]"
        try:
            if entry.method == "POST":
                if_none_exist = entry.request.get("ifNoneExist")
                if if_none_exist:
                    entry.existing = crud.find_existing(conn, call, entry.res_type,
                                                        if_none_exist)
                entry.target_id = entry.existing.res_id if entry.existing else new_id()
            elif entry.method == "PUT":
                if entry.res_id:
                    entry.target_id = entry.res_id
                else:
                    ids = matching_ids(conn, call, entry.res_type,
                                       parse_criteria(entry.query, what="Conditional update"))
                    if len(ids) > 1:
                        raise FhirError(412, "multiple-matches",
                                        "Conditional update matched more than one resource")
                    entry.target_id = ids[0] if ids else (entry.resource.get("id") or new_id())
            elif entry.method in ("DELETE", "PATCH") and entry.res_id:
                entry.target_id = entry.res_id
            else:
                continue
        except FhirError as exc:
            raise _wrap(entry.index, exc) from exc
        identity = f"{entry.res_type}/{entry.target_id}"
        if identity in identities and entry.method != "GET":
            raise FhirError(400, "invalid", f"{where} and Bundle.entry[{identities[identity]}] "
                            f"both resolve to {identity}", where)
        identities[identity] = entry.index
        if entry.full_url and entry.method in ("POST", "PUT"):
            mapping[entry.full_url] = identity
    return mapping


def _rewrite_all(conn, call: Call, entries: list[Entry],  # type: ignore[no-untyped-def]
                 mapping: dict[str, str]) -> None:
    """Rewrite urn:uuid/urn:oid/fullUrl and conditional references in every resource."""
    cache: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry.resource, dict):
            continue
        where = f"Bundle.entry[{entry.index}]"
        base_url = _full_url_base(entry.full_url) or call.base_url

        def resolve(ref: str, _where: str = where, _base: str = base_url) -> str | None:
            base, hash_, fragment = ref.partition("#")
            target = base
            if target in mapping:
                return mapping[target] + (hash_ + fragment if hash_ else "")
            if REL_REF.match(target):
                # Relative to the base of the referring entry's fullUrl (R4 Bundle,
                # "Resolving references in Bundles"), else to this server's base.
                absolute = f"{_base}/{target.split('/_history/', 1)[0]}"
                if absolute in mapping:
                    return mapping[absolute]
                return None
            if target.startswith(("urn:uuid:", "urn:oid:")):
                raise FhirError(404, "not-found", f"{_where}: reference '{ref}' names no entry "
                                "of this Bundle", f"{_where}.resource")
            if "?" in target and is_resource_type(target.split("?", 1)[0]):
                if target not in cache:
                    cache[target] = _conditional_reference(conn, call, target, _where)
                return cache[target]
            return None

        rewrite_references(entry.resource, resolve)


def _full_url_base(full_url: str | None) -> str | None:
    """`http://ehr.example/fhir` for `http://ehr.example/fhir/Patient/p1`, else None."""
    if not full_url:
        return None
    m = RESTFUL_URL.match(full_url)
    return m.group(1) if m else None


def _conditional_reference(conn, call: Call, ref: str, where: str) -> str:  # type: ignore[no-untyped-def]
    res_type, query = ref.split("?", 1)
    params = parse_qsl(query, keep_blank_values=True)
    ids = matching_ids(conn, call, res_type, params)
    if len(ids) != 1:
        status = 404 if not ids else 412
        found = "no resource" if not ids else "more than one resource"
        raise FhirError(status, "not-found" if not ids else "multiple-matches",
                        f"{where}: conditional reference '{ref}' matched {found} "
                        "(exactly one is required)", f"{where}.resource")
    return f"{res_type}/{ids[0]}"


def _execute(conn, call: Call, entry: Entry) -> Result:  # type: ignore[no-untyped-def]
    """Run a prepared transaction entry through the route table, on the Bundle's connection:
    conditional creates and conditional updates were resolved by `_resolve_identities`."""
    if entry.method == "POST" and entry.existing is not None:
        return Result(200, stored=entry.existing, location=True)
    if entry.method == "PUT":
        entry.resource["id"] = entry.target_id
        return route_table.dispatch(call, _request(
            entry, path=f"{entry.res_type}/{entry.target_id}", query=""), conn)
    if entry.method == "POST":
        return route_table.dispatch(call, _request(entry, if_none_exist=None), conn)
    return route_table.dispatch(call, _request(entry), conn)


def _request(entry: Entry, **changes: Any) -> route_table.Request:
    """An entry as the route table sees it (`changes`: what the transaction resolved)."""
    path, _, query = entry.url.partition("?")
    req = entry.request
    values: dict[str, Any] = {
        "method": entry.method, "path": path, "query": query,
        "params": parse_qsl(query, keep_blank_values=True),
        "body": lambda root: entry.resource, "patch": lambda root: _patch_operations(entry),
        "has_body": entry.resource is not None,
        "if_match": req.get("ifMatch"), "if_none_match": req.get("ifNoneMatch"),
        "if_none_exist": req.get("ifNoneExist"),
        "new_id": entry.target_id if entry.method == "POST" else None,
        "validated": entry.validated,
    }
    values.update(changes)
    return route_table.Request(**values)


def _patch_operations(entry: Entry) -> Any:
    """A PATCH entry carries its JSON Patch as a Binary resource (base64 data)."""
    import base64

    import orjson

    resource = entry.resource
    if isinstance(resource, dict) and resource.get("resourceType") == "Binary":
        try:
            return orjson.loads(base64.b64decode(resource.get("data", "")))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise FhirError(400, "invalid", f"Invalid JSON Patch in Binary: {exc}") from exc
    raise FhirError(400, "not-supported",
                    "PATCH entries need a Binary resource holding a JSON Patch document")


# -- batch -----------------------------------------------------------------------------
def _batch(call: Call, raw_entries: list) -> Result:
    entries: list[Entry | FhirError] = []
    for i, raw in enumerate(raw_entries):
        try:
            entries.append(_parse_entry(i, raw, call))
        except FhirError as exc:
            entries.append(_wrap(i, exc))
    out: list[Entry] = []
    for item in entries:
        if isinstance(item, FhirError):
            out.append(_failed_entry(item))
            continue
        try:
            call.budget.check_time()
            with call.write() as conn:  # each entry on its own, in its own transaction
                item.result = route_table.dispatch(call, _request(item, new_id=None), conn)
        except FhirError as exc:
            item.result = None
            item.extra["error"] = _wrap(item.index, exc)
        out.append(item)
    return Result(200, resource=_response_bundle("batch-response", out, call))


def _failed_entry(error: FhirError) -> Entry:
    entry = Entry(-1, "GET", "", "", None, "", None, None, {})
    entry.extra["error"] = error
    return entry


# -- response --------------------------------------------------------------------------
_REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}


def _response_bundle(kind: str, entries: list[Entry], call: Call) -> dict:
    out = []
    for entry in entries:  # both lists are in the request's entry order
        error = entry.extra.get("error")
        if error is not None:
            out.append({"response": {"status": f"{error.status}",
                                     "outcome": error.outcome()}})
            continue
        out.append(_response_entry(entry.result, call))  # type: ignore[arg-type]
    return {"resourceType": "Bundle", "type": kind, "timestamp": format_instant(now_us()),
            "entry": out}


def _response_entry(result: Result, call: Call) -> dict:
    status = result.status
    response: dict = {"status": f"{status} {_REASONS.get(status, '')}".strip()}
    entry: dict = {}
    stored = result.stored
    if stored is not None:
        entry["fullUrl"] = f"{call.base_url}/{stored.res_type}/{stored.res_id}"
        response["etag"] = stored.etag
        response["lastModified"] = stored.last_updated_iso
        if status in (200, 201) and result.location:
            response["location"] = (f"{stored.res_type}/{stored.res_id}/_history/"
                                    f"{stored.version}")
        if call.prefer_return == "representation" and stored.body is not None \
                and status != 304:
            entry["resource"] = stored.resource()
    if result.resource is not None:
        entry["resource"] = result.resource
    if call.prefer_return == "operationoutcome" or (result.issues and stored is None):
        response["outcome"] = operation_outcome(result.issues or [
            Issue("information", "informational", "OK")])
    entry["response"] = response
    return entry
