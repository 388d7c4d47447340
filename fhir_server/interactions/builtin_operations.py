"""Operations every resource type has: $validate."""

from __future__ import annotations

from typing import Any

from fhir_server.errors import FhirError, Issue, operation_outcome
from fhir_server.interactions.context import Call
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.results import Result
from fhir_server.storage.repository import Repository
from profiles.base_r4 import errors_only, validate_base

VALIDATE_DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def register(registry: OperationRegistry) -> None:
    registry.register(Operation(
        name="validate", handler=validate_operation, type_level=True, instance_level=True,
        methods=frozenset({"POST"}), definition=VALIDATE_DEFINITION, type_interaction=None,
        documentation="Validate a resource against base R4 and the profiles it claims "
                      "(or the `profile` parameter)."))


def _unwrap(body: Any) -> tuple[Any, str | None, str | None]:
    """The resource, profile and mode from a $validate body (Parameters or bare resource)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = profile = mode = None
        for i, param in enumerate(body.get("parameter") or []):
            name = param.get("name")
            if name == "resource":
                resource = param.get("resource")
                if resource is None:
                    raise FhirError(400, "required", "Parameter 'resource' has no resource",
                                    f"Parameters.parameter[{i}].resource")
            elif name == "profile":
                profile = param.get("valueUri") or param.get("valueCanonical")
            elif name == "mode":
                mode = param.get("valueCode")
        return resource, profile, mode
    return body, None, None


def validate_operation(call: Call, res_type: str | None, res_id: str | None,
                       params: list[tuple[str, str]], body: Any) -> Result:
    """[type]/$validate and [type]/[id]/$validate: always 200 with an OperationOutcome."""
    resource, profile, _mode = _unwrap(body)
    for key, value in params:
        if key == "profile":
            profile = value
    if resource is None and res_id is not None:
        with call.db.read() as conn:
            stored = Repository(conn).read(res_type or "", res_id)
        if stored is None or stored.deleted:
            raise FhirError(404, "not-found", f"Resource {res_type}/{res_id} is not known")
        resource = stored.resource()
    if resource is None:
        raise FhirError(400, "required", "$validate needs a resource in the body")
    issues = validate_base(resource, expected_type=res_type,
                           strict_extensions=call.settings.strict_profiles)
    if not errors_only(issues):
        issues += call.services.validate_profiles(resource, profile)
    if not any(i.severity in ("error", "fatal") for i in issues):
        issues.append(Issue("information", "informational", "Validation successful"))
    return Result(200, resource=operation_outcome(issues))
