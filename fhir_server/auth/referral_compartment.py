"""The organization policy's referral compartment: which resources an Organization may see.

A partner (client or user bound to Organization/O) sees exactly:

1. Directory data (`SHARED_TYPES`): Organization, Practitioner, PractitionerRole,
   HealthcareService, Location, Endpoint, Questionnaire, ... (no patient data).
2. **Task** whose `owner` or `requester` is one of O's references ("org refs": Organization/O,
   every PractitionerRole whose `organization` is O and every HealthcareService whose
   `providedBy` is O; see `ORG_MEMBERS`).
3. **ServiceRequest** that a visible Task focuses on (`Task.focus`), or whose `requester`
   or `performer` is an org ref.
4. Resources referenced by a visible Task or ServiceRequest through the paths of
   `REFERRAL_RULES` (patient, consent, screening QuestionnaireResponse and Observations,
   conditions, goals, encounter, the referral outcome Procedure).
5. Nothing else (fail closed: AuditEvent, Provenance, Subscription and unknown types are
   not in the compartment; administrators and SYSTEM are not narrowed).

Consent rule (edges marked `consent_gated`): clinical details reachable only through a
ServiceRequest are visible to O when O is that ServiceRequest's requester, or when the
ServiceRequest's `supportingInfo` references a Consent whose `status` is `active`. Without
such a Consent the recipient still sees the Task, the ServiceRequest itself (what the
referral carries), the Patient and the Consent, but not the QR/Observations/Conditions/
Goals/Encounter.

`REFERRAL_RULES` is data the storage layer turns into SQL (EXISTS sub-queries over its
reference index; the rule graph has no cycles). `visible_references` is the pure reference
implementation, used by tests and wherever resources are already in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache

from fhirpathpy import compile as fp_compile
from fhirpathpy.models import models

SHARED_TYPES = frozenset({
    "Organization", "Practitioner", "PractitionerRole", "HealthcareService", "Location",
    "Endpoint", "Questionnaire", "ValueSet", "CodeSystem", "StructureDefinition",
    "SearchParameter", "CapabilityStatement", "OperationDefinition", "ActivityDefinition",
    "PlanDefinition", "Library",
})


@dataclass(frozen=True)
class OrgRef:
    """The resource's element at `path` references one of the organization's org refs."""

    path: str


@dataclass(frozen=True)
class ReferencedBy:
    """A visible `source_type` resource references this one through `path`."""

    source_type: str
    path: str
    consent_gated: bool = False


Rule = OrgRef | ReferencedBy

_SR_CLINICAL = "ServiceRequest.supportingInfo | ServiceRequest.reasonReference"

REFERRAL_RULES: dict[str, tuple[Rule, ...]] = {
    "Task": (OrgRef("Task.owner"), OrgRef("Task.requester")),
    "ServiceRequest": (
        ReferencedBy("Task", "Task.focus"),
        OrgRef("ServiceRequest.requester"),
        OrgRef("ServiceRequest.performer"),
    ),
    "Patient": (
        ReferencedBy("ServiceRequest", "ServiceRequest.subject"),
        ReferencedBy("Task", "Task.for"),
    ),
    "Consent": (ReferencedBy("ServiceRequest", "ServiceRequest.supportingInfo"),),
    "QuestionnaireResponse": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Observation": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Condition": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Goal": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "DocumentReference": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Encounter": (ReferencedBy("ServiceRequest", "ServiceRequest.encounter", True),),
    "Procedure": (
        ReferencedBy("Task", "Task.output.value"),
        OrgRef("Procedure.performer.actor"),
    ),
}

#: Order in which the pure evaluator resolves types (sources before targets).
_ORDER = ("Task", "ServiceRequest", "Patient", "Consent", "QuestionnaireResponse",
          "Observation", "Condition", "Goal", "DocumentReference", "Encounter", "Procedure")


@lru_cache(maxsize=256)
def _path(expr: str) -> Callable[[dict], list]:
    return fp_compile(expr, models["r4"])


def _refs(resource: dict, expr: str) -> set[str]:
    out = set()
    for value in _path(expr)(resource):
        ref = value.get("reference") if isinstance(value, dict) else None
        if ref:
            out.add("/".join(ref.split("/_history/")[0].split("/")[-2:]))
    return out


def _key(resource: dict) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


#: Resources that stand for their organization: (type, path to the organization).
ORG_MEMBERS = (("PractitionerRole", "PractitionerRole.organization"),
               ("HealthcareService", "HealthcareService.providedBy"))


def org_refs(organization: str, resources: Iterable[dict]) -> set[str]:
    """Organization/O plus every PractitionerRole (`organization`) and HealthcareService
    (`providedBy`) of O."""
    refs = {organization}
    for res in resources:
        for res_type, path in ORG_MEMBERS:
            if res.get("resourceType") == res_type and organization in _refs(res, path):
                refs.add(_key(res))
    return refs


def consent_active(service_request: dict, by_ref: dict[str, dict]) -> bool:
    """Does the ServiceRequest's supportingInfo reference an active Consent?"""
    for ref in _refs(service_request, "ServiceRequest.supportingInfo"):
        consent = by_ref.get(ref)
        if ref.startswith("Consent/") and consent and consent.get("status") == "active":
            return True
    return False


def visible_references(organization: str, resources: Iterable[dict]) -> set[str]:
    """The "Type/id" of every given resource in `organization`'s referral compartment."""
    items = list(resources)
    by_ref = {_key(r): r for r in items}
    mine = org_refs(organization, items)
    visible: set[str] = {k for k, r in by_ref.items() if r.get("resourceType") in SHARED_TYPES}
    for res_type in _ORDER:
        for rule in REFERRAL_RULES[res_type]:
            if isinstance(rule, OrgRef):
                for key, res in by_ref.items():
                    if res.get("resourceType") == res_type and _refs(res, rule.path) & mine:
                        visible.add(key)
                continue
            for key, source in by_ref.items():
                if key not in visible or source.get("resourceType") != rule.source_type:
                    continue
                if rule.consent_gated and not (
                    _refs(source, "ServiceRequest.requester") & mine
                    or consent_active(source, by_ref)
                ):
                    continue
                visible.update(r for r in _refs(source, rule.path) if r.startswith(res_type + "/"))
    return {k for k in visible if k in by_ref}
