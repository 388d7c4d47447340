"""Provider directory: `$match` (ServiceRequest instance, HealthcareService type level),
`HealthcareService/[id]/$update-capacity` and the directory model's published definitions
(rules in mappers/DIRECTORY.md)."""

from __future__ import annotations

from fhir_server.errors import FhirError
from fhir_server.interactions.context import Services
from fhir_server.matching import candidates
from fhir_server.matching import operations as ops
from fhir_server.rest.operations import Operation, OperationRegistry
from fhir_server.workflow.canonical import CANONICAL_BASE
from mappers.directory_model import definitions

OPERATION_BASE = f"{CANONICAL_BASE}/OperationDefinition"


def _match(call, res_type, res_id, params, body):  # type: ignore[no-untyped-def]
    if (res_type == "ServiceRequest") != (res_id is not None):
        raise FhirError(400, "not-supported", "$match runs on ServiceRequest/[id] or on the "
                        "HealthcareService type with Parameters", f"{res_type}")
    if res_type == "ServiceRequest":
        return ops.match_service_request(call, res_type, res_id, params, body)
    return ops.match_parameters(call, res_type, res_id, params, body)


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the directory operations and seed the extension definitions."""
    registry.register(Operation(
        name="match", handler=_match,
        types=frozenset({"ServiceRequest", "HealthcareService"}),
        type_level=True, instance_level=True, methods=frozenset({"POST"}),
        definition=f"{OPERATION_BASE}/match",
        documentation="Rank directory services for a referral: hard filters, then score "
                      "(ServiceRequest/[id]/$match or HealthcareService/$match with Parameters)"))
    registry.register(Operation(
        name="update-capacity", handler=ops.update_capacity,
        types=frozenset({"HealthcareService"}), instance_level=True,
        methods=frozenset({"POST"}),
        definition=f"{OPERATION_BASE}/HealthcareService-update-capacity",
        documentation="The providing organization sets capacity status, notes and typical wait",
        affects_state=True))
    services.seed_providers.append(definitions)
    services.hooks.after.append(_after_write)


def _after_write(conn, call, interaction, previous, new) -> None:  # type: ignore[no-untyped-def]
    """Drop the $match caches that depend on the written type."""
    candidates.invalidate(new.res_type)
