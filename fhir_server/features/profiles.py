"""Profile validation on every write, $validate's profile support, the published
conformance resources and CapabilityStatement.supportedProfile."""

from __future__ import annotations

import json

from fhir_server.errors import FhirError, Issue
from fhir_server.interactions.context import Services
from fhir_server.interactions.operations import OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from profiles.loader import registry as profile_registry
from profiles.policy import required_profiles
from profiles.validator import validate


def install(services: Services, registry: OperationRegistry) -> None:
    """Validate claimed and required profiles on write; publish what we enforce."""
    policy = _policy(services.settings.required_profiles)
    strict = services.settings.strict_profiles

    def check(event: WriteEvent) -> list[Issue]:
        new = event.resource
        if new is None:
            return []
        issues = validate(new, profiles=required_profiles(new, policy),
                          strict_unknown_profile=strict)
        errors = [i for i in issues if i.severity in ("error", "fatal")]
        if errors:
            raise FhirError(422, errors[0].code, errors[0].diagnostics, issues=issues)
        return issues

    def explicit(resource: dict, profile: str | None) -> list[Issue]:
        return validate(resource, profiles=[profile] if profile else None,
                        strict_unknown_profile=strict)

    services.phases.add("check", "profiles.validate", check, order=100)
    services.profile_validator = explicit
    for res_type, urls in profile_registry().resource_profiles().items():
        services.capability_extras.supported_profiles.setdefault(res_type, set()).update(urls)
    services.seed_providers.append(_conformance_resources)


def _policy(setting: str) -> dict | None:
    """FHIR_SERVER_REQUIRED_PROFILES: 'default', 'none', or JSON {type: [profile URLs]}."""
    if setting in ("", "default"):
        return None
    if setting == "none":
        return {}
    try:
        mapping = json.loads(setting)
    except ValueError as exc:
        raise SystemExit(f"FHIR_SERVER_REQUIRED_PROFILES is not valid JSON: {exc}") from exc
    return {k: list(v) for k, v in mapping.items()}


def _conformance_resources() -> list[dict]:
    """StructureDefinitions, ValueSets and CodeSystems we enforce, with stable ids."""
    return [r for r in profile_registry().all_resources() if r.get("id")]
