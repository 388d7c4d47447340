"""The organization policy as data: which resources staff of Organization O may see.

A partner (a Backend Services client or a user bound to Organization/O) sees exactly:

1. **Directory data** (`SHARED_TYPES`): Organization, Practitioner, PractitionerRole,
   HealthcareService, Location, Endpoint, Questionnaire and the conformance resources.
2. **What O wrote** (`WrittenBy`): every resource whose first version was written by O's
   staff or clients (`resources.author_org`), whatever its type (AuditEvent excepted:
   administrators only).
3. **O's patients**: a Patient whose `managingOrganization` is O, or who is referenced by a
   live resource that O wrote (`SubjectOfOwnRecord`: O screened, referred or served them).
4. **The referral compartment**, for data from other organizations:
   * Task whose `owner` or `requester` is one of O's references ("org refs": Organization/O,
     every PractitionerRole whose `organization` is O and every HealthcareService whose
     `providedBy` is O);
   * ServiceRequest that a visible Task focuses on, or whose `requester` or `performer` is
     one of O's references;
   * what a visible Task or ServiceRequest references: Patient, Consent, and (consent-gated)
     the screening QuestionnaireResponse, Observations, Conditions, Goals,
     DocumentReferences and Encounter; the outcome Procedure; the QuestionnaireResponse a
     visible Task names as its output (a patient's answers to the questions their care
     team sent them in a Task for the patient);
   * Observations derived from a visible QuestionnaireResponse (its scores);
   * the Flag a visible Task focuses on (the item-9 safety Flag of the risk-assessment Task
     the server gives the clinic when a patient's own answers raise it);
   * an **open referral offered to O** (`OfferedTo`): a Task in `requested` without `owner`
     whose `task-candidate` extension names one of O's references. While it is open, each
     candidate sees it as an owner would (its ServiceRequest, Patient, Consent and the
     consent-gated details); once another candidate owns it, or after O declined (its entry
     left the list), the Task lends O nothing more (what O wrote stays visible, rule 2).
5. Nothing else (fail closed). Administrators without an organization and SYSTEM are not
   narrowed.

**Consent rule** (edges marked `consent_gated`): clinical details reachable only through
a ServiceRequest that O did not write are visible when that ServiceRequest's
`supportingInfo` references a Consent with `status` active written by the same
organization as the ServiceRequest (so a recipient cannot grant itself consent by adding
its own Consent). What O wrote itself needs no consent (rule 2).

**References are capabilities.** Every write may only reference resources the writer may
read (`fhir_server/interactions/reference_check.py`), so every edge these rules follow
was visible to its author when it was written: nobody can pull another organization's
data into its compartment by writing a crafted reference.

These rules are data that `fhir_server/interactions/access.py` compiles into SQL (EXISTS
sub-queries over the reference index, evaluated before paging). The rule graph has no
cycles. An independent statement of the same rules, used as the oracle of the property
test, is `tests/access_model.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

SHARED_TYPES = frozenset({
    "Organization", "Practitioner", "PractitionerRole", "HealthcareService", "Location",
    "Endpoint", "Questionnaire", "ValueSet", "CodeSystem", "StructureDefinition",
    "SearchParameter", "CapabilityStatement", "OperationDefinition", "ActivityDefinition",
    "PlanDefinition", "Library", "Measure",
})

#: Types only administrators (and SYSTEM) may read, whoever wrote them.
ADMIN_ONLY_TYPES = frozenset({"AuditEvent"})


@dataclass(frozen=True)
class WrittenBy:
    """The organization wrote the resource (its `author_org`)."""


@dataclass(frozen=True)
class SubjectOfOwnRecord:
    """A live resource the organization wrote references this one (its patient)."""


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


@dataclass(frozen=True)
class DerivedFrom:
    """The resource references, through `path`, a visible `target_type` resource."""

    target_type: str
    path: str


@dataclass(frozen=True)
class OfferedTo:
    """An open referral Task (status requested, no owner) whose element at `path` (the
    task-candidate extension) references one of the organization's org refs."""

    path: str


Rule = WrittenBy | SubjectOfOwnRecord | OrgRef | ReferencedBy | DerivedFrom | OfferedTo
CANDIDATE_PATH = "Task.extension('task-candidate').value"

_SR_CLINICAL = "ServiceRequest.supportingInfo | ServiceRequest.reasonReference"

#: The referral compartment: data of other organizations reachable through referrals.
REFERRAL_RULES: dict[str, tuple[Rule, ...]] = {
    "Task": (OrgRef("Task.owner"), OrgRef("Task.requester"), OfferedTo(CANDIDATE_PATH)),
    "ServiceRequest": (
        ReferencedBy("Task", "Task.focus"),
        OrgRef("ServiceRequest.requester"),
        OrgRef("ServiceRequest.performer"),
    ),
    "Patient": (
        OrgRef("Patient.managingOrganization"),
        SubjectOfOwnRecord(),
        ReferencedBy("ServiceRequest", "ServiceRequest.subject"),
        ReferencedBy("Task", "Task.for"),
    ),
    "Consent": (ReferencedBy("ServiceRequest", "ServiceRequest.supportingInfo"),),
    "QuestionnaireResponse": (
        ReferencedBy("ServiceRequest", _SR_CLINICAL, True),
        ReferencedBy("Task", "Task.output.value"),
    ),
    "Observation": (
        ReferencedBy("ServiceRequest", _SR_CLINICAL, True),
        DerivedFrom("QuestionnaireResponse", "Observation.derivedFrom"),
    ),
    "Condition": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Goal": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "DocumentReference": (ReferencedBy("ServiceRequest", _SR_CLINICAL, True),),
    "Encounter": (ReferencedBy("ServiceRequest", "ServiceRequest.encounter", True),),
    "Flag": (ReferencedBy("Task", "Task.focus"),),
    "Procedure": (
        ReferencedBy("Task", "Task.output.value"),
        OrgRef("Procedure.performer.actor"),
    ),
}

#: Resources that stand for their organization: (type, path to the organization).
ORG_MEMBERS = (("PractitionerRole", "PractitionerRole.organization"),
               ("HealthcareService", "HealthcareService.providedBy"))


def organization_rules(res_type: str) -> tuple[Rule, ...]:
    """The rules that make a `res_type` resource visible to an organization (any one
    suffices); empty for types no organization may read. Shared types need none."""
    if res_type in ADMIN_ONLY_TYPES:
        return ()
    return (WrittenBy(), *REFERRAL_RULES.get(res_type, ()))
