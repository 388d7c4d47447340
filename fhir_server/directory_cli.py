"""`python -m fhir_server import-hsds PATH`: import an Open Referral HSDS 3.0 data set (a JSON
file, or a folder holding the CSV data package) in one transaction per file."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhir_server.auth.context import SYSTEM
from fhir_server.config import Settings
from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.bundles import transaction_in
from fhir_server.interactions.context import Call
from fhir_server.json_tree import same_content
from fhir_server.storage.repository import Repository
from fhir_server.storage.search_sql import find_ids
from fhir_server.wiring import build_services
from mappers import directory_model as dm
from mappers import hsds


@dataclass
class ImportSummary:
    """What one file's import did."""

    organizations: int
    locations: int
    services: int
    deactivated: list[str]


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `import-hsds PATH...`."""
    cmd = sub.add_parser("import-hsds", help="import Open Referral HSDS 3.0 JSON or CSV package")
    cmd.add_argument("paths", nargs="+", type=Path)
    cmd.set_defaults(handler=_handler)


def _handler(settings: Settings, args: argparse.Namespace) -> int:
    services = build_services(settings)
    call = Call(services=services, base_url=settings.base_url or "http://localhost/fhir",
                access=SYSTEM,
                prefer_return="minimal")
    status = 0
    for path in args.paths:
        try:
            s = import_path(call, path)
            print(f"{path}: {s.organizations} organizations, {s.locations} locations, "
                  f"{s.services} services imported; {len(s.deactivated)} marked inactive")
        except FhirError as exc:
            status = 1
            print(f"{path}: rejected, nothing imported ({len(exc.issues)} problems)")
            for issue in exc.issues:
                print(f"  {', '.join(issue.expression) or '-'}: {issue.diagnostics}")
    services.db.dispose()
    return status


def load_tables(path: Path) -> dict:
    """The HSDS tables of a JSON file or a CSV package folder."""
    if path.is_dir():
        return hsds.read_csv_package(path)
    try:
        return orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise FhirError(400, "structure", f"{path}: not readable JSON: {exc}") from exc


def import_path(call: Call, path: Path) -> ImportSummary:
    """Import one file or package; raise FhirError (nothing written) on any rejected row."""
    return import_tables(call, load_tables(path))


def import_tables(call: Call, tables: dict) -> ImportSummary:
    """Map and store HSDS tables in one transaction; services of the file's organizations
    that the file no longer lists are marked inactive."""
    mapped = hsds.map_dataset(tables)
    if mapped.errors:
        issues = [Issue("error", "invalid", e.message, [e.expression]) for e in mapped.errors]
        raise FhirError(422, "invalid", f"{len(issues)} HSDS rows rejected; nothing imported",
                        issues=issues)
    with call.write() as conn:
        entries = _changed_entries(conn, mapped.entries)
        if entries:
            transaction_in(conn, call, entries)
        deactivated = _deactivate_removed(conn, call, mapped)
    return ImportSummary(mapped.counts.get("Organization", 0),
                         mapped.counts.get("Location", 0), len(mapped.service_ids), deactivated)


def _changed_entries(conn, entries: list[dict]) -> list[dict]:  # type: ignore[no-untyped-def]
    """Entries whose resource differs from what is stored (re-import writes no new versions).
    References to rows that already exist are resolved here; new ones stay urn:uuid."""
    repo = Repository(conn)
    existing: dict[str, str] = {}
    bodies: dict[str, dict] = {}
    for entry in entries:  # each entry's stored resource, found and read in one statement
        res_type = entry["resource"]["resourceType"]
        ident = entry["request"]["url"].split("?identifier=", 1)[1]
        found = repo.search_resources(res_type, [("identifier", ident)], limit=2)
        if len(found) == 1:
            existing[entry["fullUrl"]] = f"{res_type}/{found[0]['id']}"
            bodies[entry["fullUrl"]] = found[0]
    out = []
    for entry in entries:
        resource = _resolve(entry["resource"], existing)
        body = bodies.get(entry["fullUrl"])
        if body is not None and same_content(body, resource):
            continue
        out.append({**entry, "resource": resource})
    return out


def _resolve(value, mapping: dict[str, str]):  # type: ignore[no-untyped-def]
    if isinstance(value, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str)
                    else _resolve(v, mapping)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, mapping) for v in value]
    return value


def _deactivate_removed(conn, call: Call, mapped: hsds.Mapped) -> list[str]:  # type: ignore[no-untyped-def]
    from fhir_server.interactions import crud

    repo = Repository(conn)
    keep = set(mapped.service_ids)
    done = []
    for org_hsds in mapped.organization_ids:
        ident = f"{dm.HSDS_ID_SYSTEM}|{org_hsds}"
        for org_id in find_ids(conn, "Organization", [("identifier", ident)]):
            by_org = [("organization", f"Organization/{org_id}")]
            for service in repo.search_resources("HealthcareService", by_org, limit=100_000):
                sid = service["id"]
                hsds_id = next((i.get("value") for i in service.get("identifier") or []
                                if i.get("system") == dm.HSDS_ID_SYSTEM), None)
                if hsds_id is None or hsds_id in keep or service.get("active") is False:
                    continue
                service["active"] = False
                crud.store_update(conn, call, "HealthcareService", sid, service, None, "PUT")
                done.append(hsds_id)
    return done
