"""The search interaction: parse, run, and shape the searchset Bundle.

Serves type-level (`Task?...`, `Task/_search`), system-level (`?_type=...`) and compartment
(`Patient/123/Task`) searches. Paging links carry a keyset cursor, never a cached result.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from fhir_server.budget import RequestBudget
from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.interactions.context import Call
from fhir_server.interactions.results import Result
from fhir_server.search.capability import (
    capability_search_params,
    supported_includes,
    supported_revincludes,
)
from fhir_server.search.parser import (
    DEFAULT_LIMITS,
    ParsedSearch,
    SearchLimits,
    compartment_filter,
    parse_search,
)
from fhir_server.search.registry import mandatory_elements, summary_elements
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.storage.search_sql import Restrict, Row, SearchResult, execute_search

__all__ = ["search_bundle", "capability_search_params", "supported_includes",
           "supported_revincludes", "apply_subsetting"]

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED", "display": "subsetted"}
_ALWAYS = ("resourceType", "id", "meta")


def search(call: Call, res_type: str | None, params: list[tuple[str, str]], *,
           compartment: tuple[str, str] | None = None,
           conn: Connection | None = None) -> Result:
    """The search interaction: system, type or compartment level, narrowed to what the
    caller may see (in its own read transaction, or on `conn`, a Bundle's)."""
    from fhir_server.interactions import access
    from fhir_server.interactions.crud import reading

    params = [(k, v) for k, v in params if k != "_format"]
    level = "search-type" if res_type else "search-system"
    access.check_type(call, level, res_type)
    with reading(call, conn) as c:
        if compartment is not None:
            owner = Repository(c).read(*compartment)
            if owner is None or owner.deleted:
                raise FhirError(404, "not-found", f"{compartment[0]}/{compartment[1]} is not known")
            access.check_existing(c, call, "read", owner)
        bundle = search_bundle(c, res_type, params, base_url=call.base_url,
                               strict=call.strict_handling, compartment=compartment,
                               restrict=access.restriction(c, call, level),
                               limits=call.search_limits, budget=call.budget)
    return Result(200, resource=bundle)


def search_bundle(conn: Connection, res_type: str | None, params: list[tuple[str, str]], *,
                  base_url: str, strict: bool, compartment: tuple[str, str] | None = None,
                  restrict: Restrict | None = None, limits: SearchLimits = DEFAULT_LIMITS,
                  budget: RequestBudget | None = None) -> dict[str, Any]:
    """Run a search and return the searchset Bundle (links, total, match/include/outcome),
    within the search `limits` and the request's cost `budget`."""
    base_url = base_url.rstrip("/")
    parsed = parse_search(res_type, params, strict=strict, base_url=base_url, limits=limits)
    path = res_type or ""
    if compartment is not None:
        if res_type is None:
            raise FhirError(400, "not-supported", "Compartment search needs a resource type")
        parsed.filters.append(compartment_filter(compartment, res_type))
        path = f"{compartment[0]}/{compartment[1]}/{res_type}"
    result = execute_search(conn, parsed, restrict=restrict, budget=budget)
    return _bundle(parsed, result, base_url, path)


def _link(base_url: str, path: str, params: list[tuple[str, str]]) -> str:
    url = f"{base_url}/{path}" if path else base_url
    return f"{url}?{urlencode(params)}" if params else url


def _bundle(parsed: ParsedSearch, result: SearchResult, base_url: str,
            path: str) -> dict[str, Any]:
    self_params = parsed.self_params
    links = [{"relation": "self", "url": _link(base_url, path, self_params
                                               + ([("_cursor", parsed.cursor)]
                                                  if parsed.cursor else []))}]
    if parsed.cursor:
        links.append({"relation": "first", "url": _link(base_url, path, self_params)})
    else:
        links.append({"relation": "first", "url": links[0]["url"]})
    if result.next_cursor:
        links.append({"relation": "next", "url": _link(
            base_url, path, self_params + [("_cursor", result.next_cursor)])})
    if result.prev_cursor:
        links.append({"relation": "previous", "url": _link(
            base_url, path, self_params + [("_cursor", result.prev_cursor)])})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if result.total is not None:
        bundle["total"] = result.total
    bundle["link"] = links
    entries = [_entry(row, "match", parsed, base_url) for row in result.matches]
    entries += [_entry(row, "include", parsed, base_url) for row in result.included]
    issues = [Issue("warning", "not-supported",
                    f"Search parameter {name}={value!r} was ignored: {why}", [name])
              for name, value, why in parsed.ignored]
    issues += [Issue("warning", "too-costly", w) for w in result.warnings]
    if issues:
        entries.append({"resource": operation_outcome(issues), "search": {"mode": "outcome"}})
    if entries:
        bundle["entry"] = entries
    return bundle


def _entry(row: Row, mode: str, parsed: ParsedSearch, base_url: str) -> dict[str, Any]:
    resource = json.loads(row.body)
    resource = apply_subsetting(resource, parsed.summary, parsed.elements)
    return {"fullUrl": f"{base_url}/{row.res_type}/{row.res_id}", "resource": resource,
            "search": {"mode": mode}}


def apply_subsetting(resource: dict[str, Any], summary: str | None,
                     elements: tuple[str, ...] | None) -> dict[str, Any]:
    """Apply `_summary` (true/text/data) or `_elements`, tagging the result SUBSETTED."""
    res_type = resource.get("resourceType", "")
    keep: set[str] | None = None
    if summary == "true":
        keep = set(summary_elements(res_type))
    elif summary == "text":
        keep = {"text"} | set(mandatory_elements(res_type))
    elif summary == "data":
        keep = {k for k in resource if k != "text"}
    elif elements is not None and summary in (None, "false"):
        keep = set()
        for e in elements:
            head, _, rest = e.partition(".")
            keep.add(rest.split(".")[0] if head == res_type and rest else head.split(".")[0])
        keep |= set(mandatory_elements(res_type))
    if keep is None:
        return resource
    out: dict[str, Any] = {}
    for key, value in resource.items():
        base = key.lstrip("_")
        if key in _ALWAYS or base in keep or _choice_base(base) in keep:
            out[key] = value
    meta = dict(out.get("meta") or {})
    tags = list(meta.get("tag") or [])
    if not any(t.get("code") == "SUBSETTED" for t in tags):
        tags.append(dict(SUBSETTED))
    meta["tag"] = tags
    out["meta"] = meta
    return out


def _choice_base(key: str) -> str:
    """`valueQuantity` -> `value` (choice elements are named by their base in summaries)."""
    for i in range(1, len(key)):
        if key[i].isupper():
            return key[:i]
    return key
