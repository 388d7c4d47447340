"""Which profiles a resource must conform to on write, whatever it claims in meta.profile."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fhir_server.workflow.task_rules import is_referral_task  # the one definition

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
TASK_FOR_REFERRAL = SDOHCC + "SDOHCC-TaskForReferralManagement"
SERVICE_REQUEST = SDOHCC + "SDOHCC-ServiceRequest"

Rule = Callable[[dict[str, Any]], list[str]]


def _referral_task(resource: dict[str, Any]) -> list[str]:
    return [TASK_FOR_REFERRAL] if is_referral_task(resource) else []


def _service_request(_resource: dict[str, Any]) -> list[str]:
    return [SERVICE_REQUEST]


DEFAULT_POLICY: dict[str, Rule | list[str]] = {
    "Task": _referral_task,
    "ServiceRequest": _service_request,
}


def required_profiles(resource: dict[str, Any],
                      policy: Mapping[str, Rule | list[str]] | None = None) -> list[str]:
    """Profiles ``resource`` must conform to under ``policy`` (resource type -> list of profile
    URLs, or a function of the resource returning them).  Default: SDOHCC Task For Referral
    Management for referral Tasks, SDOHCC ServiceRequest for every ServiceRequest."""
    if not isinstance(resource, dict):
        return []
    rule = (DEFAULT_POLICY if policy is None else policy).get(resource.get("resourceType", ""))
    if rule is None:
        return []
    return list(rule(resource)) if callable(rule) else list(rule)
