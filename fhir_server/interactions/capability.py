"""The CapabilityStatement, generated from what the server actually wires up."""

from __future__ import annotations

from fhir_server import FHIR_VERSION, SOFTWARE_NAME, SOFTWARE_VERSION
from fhir_server.interactions import audit_events
from fhir_server.interactions.context import Call
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.resource_types import resource_types
from fhir_server.storage.repository import format_instant, now_us

TYPE_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance",
                     "history-type", "create", "search-type")
SYSTEM_INTERACTIONS = ("transaction", "batch", "search-system", "history-system")
FORMATS = ("application/fhir+json", "json", "application/fhir+xml", "xml")


def capability_statement(call: Call, registry: OperationRegistry) -> dict:
    """Build the CapabilityStatement from the router, search registry and operations."""
    from fhir_server.interactions.search import (
        capability_search_params,
        supported_includes,
        supported_revincludes,
    )

    extra = call.services.capability_extras
    resources = []
    for res_type in sorted(resource_types()):
        entry: dict = {
            "type": res_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{res_type}",
            "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": "single",
            "referencePolicy": ["literal", "logical"],
            "searchInclude": supported_includes(res_type),
            "searchRevInclude": supported_revincludes(res_type),
            "searchParam": capability_search_params(res_type),
        }
        extensions = [e for make in extra.resource_extensions.get(res_type, [])
                      for e in make(call)]
        if extensions:
            entry["extension"] = extensions
        supported = extra.supported_profiles.get(res_type)
        if supported:
            entry["supportedProfile"] = sorted(supported)
        ops = registry.for_type(res_type)
        if ops:
            entry["operation"] = [_op(o) for o in sorted(ops, key=lambda o: o.name)]
        if res_type == "AuditEvent":
            entry.update(audit_events.capability())
        resources.append({k: v for k, v in entry.items() if v not in ([], None)})
    rest: dict = {
        "mode": "server",
        "resource": resources,
        "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
    }
    system_ops = registry.system_level()
    if system_ops:
        rest["operation"] = [_op(o) for o in sorted(system_ops, key=lambda o: o.name)]
    if extra.security is not None:
        rest["security"] = extra.security(call)
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(now_us())[:10],
        "kind": "instance",
        "software": {"name": SOFTWARE_NAME, "version": SOFTWARE_VERSION},
        "implementation": {"description": "Closed-loop mental-health referral FHIR server",
                           "url": call.base_url},
        "fhirVersion": FHIR_VERSION,
        "format": list(FORMATS),
        "patchFormat": ["application/json-patch+json"],
        "rest": [rest],
    }
    if extra.instantiates:
        statement["instantiates"] = sorted(extra.instantiates)
    if extra.extensions:
        statement["extension"] = [ext(call) for ext in extra.extensions]
    return statement


def _op(op) -> dict:  # type: ignore[no-untyped-def]
    return {"name": op.name, "definition": op.definition or
            f"http://mh-referral.example.org/fhir/OperationDefinition/{op.name}"}
