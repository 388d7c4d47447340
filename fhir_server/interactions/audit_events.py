"""`AuditEvent` over REST, for administrators: the audit log as FHIR, so a privacy officer
can answer "who saw this patient's record".

* `GET AuditEvent?patient=Patient/x` (or `entity=`, `agent=` — a reference or a client id —,
  `date=` with prefixes `eq ge gt le lt`, `outcome=`, `client=`, `_count=`), newest first,
  with a `next` link; `GET AuditEvent/[id]`.
* The log is written by the server only: creating, changing or deleting an AuditEvent is
  405. Only administrators (and SYSTEM) may read it (403 otherwise, audited).
`$audit-events` (the older operation) answers the same search.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fhir_server.auth.audit_store import AuditQuery, read_audit, search_audit
from fhir_server.auth.policy import require_admin
from fhir_server.errors import FhirError
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.interactions.results import Result
from fhir_server.search.values import date_range

MAX_COUNT = 1000
_LISTS = {"entity": "entity", "agent": "agent", "patient": "patient"}


def route(call: Call, method: str, res_id: str | None, params: list[tuple[str, str]]
          ) -> Result:
    """Dispatch a request on the AuditEvent type or one AuditEvent."""
    if method != "GET":
        raise FhirError(405, "not-supported", "AuditEvents are recorded by the server; they "
                        "cannot be created, changed or deleted", headers={"Allow": "GET"})
    _require_admin(call)
    if res_id is not None:
        event = read_audit(call.db, res_id)
        if event is None:
            raise FhirError(404, "not-found", f"Resource AuditEvent/{res_id} is not known")
        return Result(200, resource=event)
    return Result(200, resource=search(call, params))


def _require_admin(call: Call) -> None:
    ctx = access.ctx_of(call)
    try:
        require_admin(ctx)
    except FhirError as exc:
        raise access.deny(call, "search-type", exc, ["AuditEvent"]) from exc


def search(call: Call, params: list[tuple[str, str]]) -> dict:
    """A searchset Bundle of the matching AuditEvents."""
    query = parse_query(params)
    page, more = search_audit(call.db, query)
    bundle: dict = {"resourceType": "Bundle", "type": "searchset", "link": [
        {"relation": "self", "url": f"{call.base_url}/AuditEvent?{urlencode(params)}"}],
        "entry": [{"fullUrl": f"{call.base_url}/AuditEvent/{e['id']}", "resource": e,
                   "search": {"mode": "match"}} for e in page]}
    if more is not None:
        kept = [(k, v) for k, v in params if k != "_cursor"] + [("_cursor", str(more))]
        bundle["link"].append({"relation": "next",
                               "url": f"{call.base_url}/AuditEvent?{urlencode(kept)}"})
    return bundle


def parse_query(params: list[tuple[str, str]]) -> AuditQuery:
    """The audit search parameters (400 on anything else or a malformed value)."""
    lists: dict[str, list[str]] = {"entity": [], "agent": [], "patient": []}
    since: int | None = None
    before: int | None = None
    values: dict[str, str] = {}
    for name, value in params:
        if name in _LISTS:
            lists[name] += [v.strip() for v in value.split(",") if v.strip()]
        elif name == "date":
            low, high = _date(value)
            since = low if since is None or (low is not None and low > since) else since
            before = high if before is None or (high is not None and high < before) else before
        elif name in ("outcome", "client", "_count", "_cursor"):
            values[name] = value
        elif name not in ("_format",):
            raise FhirError(400, "not-supported", f"AuditEvent search does not support "
                            f"'{name}' (use patient, entity, agent, date, outcome, client, "
                            "_count)", name)
    count = _int(values.get("_count", "100"), "_count")
    return AuditQuery(entity=tuple(lists["entity"]), agent=tuple(lists["agent"]),
                      patient=tuple(lists["patient"]), since_us=since, before_us=before,
                      outcome=values.get("outcome"), client_id=values.get("client"),
                      after_seq=_int(values["_cursor"], "_cursor") if "_cursor" in values
                      else None, count=max(1, min(count, MAX_COUNT)))


def _date(value: str) -> tuple[int | None, int | None]:
    """[since, before) for one `date` value with its prefix."""
    prefix = value[:2] if value[:2] in ("eq", "ge", "gt", "le", "lt") else "eq"
    text = value[2:] if value[:2] == prefix else value
    try:
        low, high = date_range(text)
    except ValueError as exc:
        raise FhirError(400, "invalid", f"Invalid date '{value}': {exc}", "date") from exc
    return {"eq": (low, high), "ge": (low, None), "gt": (high, None),
            "le": (None, high), "lt": (None, low)}[prefix]


def _int(value: str, name: str) -> int:
    if not value.isdigit():
        raise FhirError(400, "invalid", f"Invalid {name} '{value}'", name)
    return int(value)


def capability() -> dict:
    """What the CapabilityStatement says of AuditEvent: read and search, administrators."""
    search_params = [("patient", "reference"), ("entity", "reference"),
                     ("agent", "reference"), ("date", "date"), ("outcome", "token")]
    return {
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "documentation": "The audit log (IHE BALP AuditEvents), written by the server only; "
                         "administrators may read and search it.",
        "updateCreate": False, "conditionalCreate": False, "conditionalUpdate": False,
        "conditionalDelete": "not-supported", "readHistory": False, "versioning": "no-version",
        "searchInclude": [], "searchRevInclude": [],
        "searchParam": [{"name": name, "type": kind,
                         "definition": f"http://hl7.org/fhir/SearchParameter/AuditEvent-{name}"}
                        for name, kind in search_params],
    }
