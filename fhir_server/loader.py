"""`python -m fhir_server load FILE...`: load resources and bundles through the same
interactions the REST API uses (validation, hooks, one transaction per file entry).

Loading is idempotent, so `make run` may load examples/ again: transaction entries create
conditionally (`ifNoneExist`), and resources with an id whose stored content is already the
same (`same_content`) are skipped instead of getting a new version."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson

from fhir_server.auth.context import SYSTEM
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.interactions import crud
from fhir_server.interactions.bundles import process_bundle
from fhir_server.interactions.context import Call
from fhir_server.json_tree import same_content
from fhir_server.storage.repository import Repository
from fhir_server.wiring import build_services


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `load FILE...`."""
    load = sub.add_parser("load", help="load resources or bundles from JSON files")
    load.add_argument("files", nargs="+", type=Path)
    load.set_defaults(handler=_handler)


def _handler(settings: Settings, args: argparse.Namespace) -> int:
    for line in load_files(settings, args.files):
        print(line)
    return 0


def load_files(settings: Settings, files: list[Path]) -> list[str]:
    """Load each file: a transaction/batch Bundle is posted as is; a collection's entries and
    single resources are PUT when they have an id (idempotent) and POSTed otherwise."""
    services = build_services(settings)
    call = Call(services=services, base_url=settings.base_url or "http://localhost/fhir",
                access=SYSTEM,
                prefer_return="minimal")
    lines = []
    for path in files:
        data = orjson.loads(path.read_bytes())
        try:
            lines.append(f"{path}: {_load_one(call, data)}")
        except FhirError as exc:
            raise SystemExit(f"{path}: {exc.status} {exc.diagnostics}") from exc
    services.db.dispose()
    return lines


def _load_one(call: Call, data: dict) -> str:
    if data.get("resourceType") == "Bundle" and data.get("type") in ("transaction", "batch"):
        entries = data.get("entry") or []
        kept = _changed(call, entries)
        skipped = len(entries) - len(kept)
        if kept:
            process_bundle(call, {**data, "entry": kept})
        return f"{data['type']} of {len(kept)} entries" + (
            f" ({skipped} unchanged, skipped)" if skipped else "")
    resources = ([e["resource"] for e in data.get("entry", []) if "resource" in e]
                 if data.get("resourceType") == "Bundle" else [data])
    written = 0
    for resource in resources:
        res_type = resource["resourceType"]
        if resource.get("id"):
            if not _changed(call, [{"resource": resource,
                                    "request": {"method": "PUT",
                                                "url": f"{res_type}/{resource['id']}"}}]):
                continue
            crud.update(call, res_type, resource["id"], resource)
        else:
            crud.create(call, res_type, resource)
        written += 1
    skipped = len(resources) - written
    return f"{written} resources" + (f" ({skipped} unchanged, skipped)" if skipped else "")


def _changed(call: Call, entries: list[dict]) -> list[dict]:
    """The entries that would change something: PUT Type/id entries whose resource is stored
    with the same content are left out (unless another entry refers to them by a urn)."""
    puts = {}
    for i, entry in enumerate(entries):
        request, resource = entry.get("request") or {}, entry.get("resource")
        url = request.get("url") or ""
        if (request.get("method") == "PUT" and isinstance(resource, dict) and "?" not in url
                and url.count("/") == 1 and not str(entry.get("fullUrl", "")).startswith("urn:")):
            puts[i] = tuple(url.split("/"))
    if not puts:
        return entries
    with call.db.read() as conn:
        stored = Repository(conn).read_many(list(puts.values()))
    unchanged = set()
    for i, key in puts.items():
        current = stored.get(key)
        if current is not None and not current.deleted and same_content(
                current.resource(), entries[i]["resource"]):
            unchanged.add(i)
    return [e for i, e in enumerate(entries) if i not in unchanged]
