"""History interactions at instance, type and system level, with keyset paging."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fhir_server.errors import FhirError
from fhir_server.interactions import access
from fhir_server.interactions.context import Call
from fhir_server.interactions.crud import parse_version
from fhir_server.interactions.results import Result
from fhir_server.storage.repository import Repository, StoredResource, format_instant, now_us

HISTORY_PARAMS = ("_since", "_count", "_cursor", "_format")


def parse_instant_param(name: str, value: str) -> int:
    """A FHIR instant (or date) query value as epoch microseconds; 400 when malformed."""
    text = value.strip()
    try:
        if len(text) == 10:
            dt = datetime.fromisoformat(text).replace(tzinfo=UTC)
        else:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if dt.tzinfo is None:
                raise ValueError("an instant needs a time zone")
        return int(dt.timestamp() * 1_000_000)
    except (ValueError, OverflowError) as exc:
        raise FhirError(400, "invalid", f"Invalid {name} '{value[:40]}': {exc}", name) from exc


def _count(call: Call, value: str | None) -> int:
    if value is None:
        return call.settings.default_page_size
    count = parse_version(value)
    if count is None:
        raise FhirError(400, "invalid", f"Invalid _count '{value[:40]}'", "_count")
    return max(1, min(count, call.settings.max_page_size))


def history(call: Call, params: list[tuple[str, str]], *, res_type: str | None = None,
            res_id: str | None = None) -> Result:
    """GET [type]/[id]/_history, [type]/_history, /_history as a `history` Bundle."""
    args: dict[str, str] = {}
    for key, value in params:
        if key not in HISTORY_PARAMS:
            if call.strict_handling:
                raise FhirError(400, "not-supported", f"Unknown history parameter '{key}'", key)
            continue
        args[key] = value
    count = _count(call, args.get("_count"))
    since = parse_instant_param("_since", args["_since"]) if "_since" in args else None
    cursor = _parse_cursor(args.get("_cursor"))
    level = ("history-instance" if res_id is not None else
             "history-type" if res_type is not None else "history-system")
    access.check_type(call, level, res_type)
    with call.db.read() as conn:
        repo = Repository(conn)
        restrict = None
        if res_id is not None and res_type is not None:
            current = repo.read(res_type, res_id)
            if current is None:
                raise FhirError(404, "not-found", f"Resource {res_type}/{res_id} is not known")
            access.check_existing(conn, call, level, current)
        else:
            restrict = access.restriction(conn, call, level)
        page, next_cursor, total = repo.history(res_type=res_type, res_id=res_id,
                                                since_us=since, cursor=cursor, count=count,
                                                restrict=restrict)
    call.budget.charge_rows(len(page), "_count")
    path = "/".join(p for p in (res_type, res_id) if p) + ("/" if res_type else "") + "_history"
    base = f"{call.base_url}/{path}"
    keep = [(k, v) for k, v in params if k in ("_since", "_count")]
    links = [{"relation": "self", "url": _url(base, keep + _cursor_param(cursor))},
             {"relation": "first", "url": _url(base, keep)}]
    if next_cursor is not None:
        links.append({"relation": "next", "url": _url(base, keep + _cursor_param(next_cursor))})
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "timestamp": format_instant(now_us()),
        "total": total,
        "link": links,
        "entry": [history_entry(call.base_url, v) for v in page],
    }
    return Result(200, resource=bundle)


def history_entry(base_url: str, version: StoredResource) -> dict:
    """One history Bundle entry with request and response."""
    full_url = f"{base_url}/{version.res_type}/{version.res_id}"
    entry: dict = {"fullUrl": full_url}
    if version.body is not None:
        entry["resource"] = version.resource()
    method = version.method or ("DELETE" if version.deleted else "PUT")
    url = (f"{version.res_type}" if method == "POST"
           else f"{version.res_type}/{version.res_id}")
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(
        method, "201 Created" if version.version == 1 else "200 OK")
    entry["request"] = {"method": method, "url": url}
    entry["response"] = {"status": status, "etag": version.etag,
                         "lastModified": version.last_updated_iso}
    return entry


def _parse_cursor(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    parts = [parse_version(p) for p in value.split("-")]
    if len(parts) != 2 or None in parts:
        raise FhirError(400, "invalid", f"Invalid paging cursor '{value[:40]}'", "_cursor")
    return parts[0], parts[1]  # type: ignore[return-value]


def _cursor_param(cursor: tuple[int, int] | None) -> list[tuple[str, str]]:
    return [] if cursor is None else [("_cursor", f"{cursor[0]}-{cursor[1]}")]


def _url(base: str, params: list[tuple[str, str]]) -> str:
    return f"{base}?{urlencode(params)}" if params else base
