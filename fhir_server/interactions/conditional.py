"""Conditional interactions: find the resources a `Type?query` selects, and serialise
conditional creates so that concurrent duplicates create exactly one resource."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Call
from fhir_server.interactions.request_text import refuse_control_in_params
from fhir_server.storage.conditional_lock import lock_criteria
from fhir_server.storage.db import Connection


def parse_criteria(query: str, *, what: str) -> list[tuple[str, str]]:
    """Parse `a=b&c=d` criteria; an empty query is refused (it would match everything)."""
    query = query.lstrip("?")
    params = parse_qsl(query, keep_blank_values=True)
    if not params:
        raise FhirError(400, "invalid", f"{what} requires search criteria")
    refuse_control_in_params(params, f"{what} parameter")
    return params


def matching_ids(conn: Connection, call: Call, res_type: str,
                 params: list[tuple[str, str]]) -> list[str]:
    """Ids (at most 2) of the current resources of `res_type` matching the criteria, among
    those the caller may see: conditional writes never reveal or touch hidden resources."""
    from fhir_server.interactions.access import check_type, restriction
    from fhir_server.storage.search_sql import find_ids
    from fhir_server.storage.sql_limits import too_costly_sql

    check_type(call, "search-type", res_type)
    with too_costly_sql(call.budget, [name for name, _v in params]):  # 400, not a 500
        return find_ids(conn, res_type, params, restrict=restriction(conn, call))


def lock_for_create(conn: Connection, res_type: str, params: list[tuple[str, str]]) -> None:
    """Take the per-criteria lock before searching for a conditional create's matches."""
    normalised = "&".join(f"{k}={v}" for k, v in sorted(params))
    digest = hashlib.sha256(f"{res_type}?{normalised}".encode()).hexdigest()
    lock_criteria(conn, res_type, digest)
