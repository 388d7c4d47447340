"""`python -m fhir_server load FILE...`: load resources and bundles through the same
interactions the REST API uses (validation, hooks, one transaction per file entry)."""

from __future__ import annotations

from pathlib import Path

import orjson

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.interactions import crud
from fhir_server.interactions.bundles import process_bundle
from fhir_server.interactions.context import Call, Services
from fhir_server.storage.db import Database


def make_services(settings: Settings, db: Database | None = None) -> Services:
    """Services wired exactly as the web app wires them."""
    from flask import Flask

    from fhir_server.rest.operations import OperationRegistry
    from fhir_server.wiring import wire

    services = Services(settings=settings, db=db or Database(settings.database_url))
    wire(Flask(__name__), services, OperationRegistry())
    return services


def load_files(settings: Settings, files: list[Path]) -> list[str]:
    """Load each file: a transaction/batch Bundle is posted as is; a collection's entries and
    single resources are PUT when they have an id (idempotent) and POSTed otherwise."""
    services = make_services(settings)
    call = Call(services=services, base_url=settings.base_url or "http://localhost/fhir",
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
        result = process_bundle(call, data)
        entries = result.resource["entry"] if result.resource else []
        return f"{data['type']} of {len(entries)} entries"
    resources = ([e["resource"] for e in data.get("entry", []) if "resource" in e]
                 if data.get("resourceType") == "Bundle" else [data])
    for resource in resources:
        res_type = resource["resourceType"]
        if resource.get("id"):
            crud.update(call, res_type, resource["id"], resource)
        else:
            crud.create(call, res_type, resource)
    return f"{len(resources)} resources"
