"""Referral Task outputs: what closes the loop (SDOHCC TaskForReferralManagement output slices).

A completed referral Task needs at least one qualifying output:
  * `resulting-activity` + valueReference to a completed SDOHCC Procedure whose `basedOn` is the
    focus ServiceRequest (or a ServiceRequest that is itself `basedOn` the focus: the platform's
    filler-order in an indirect referral);
  * `resulting-activity` + valueCodeableConcept with a procedure code;
  * `additional-content` + valueReference to an Observation (enrollment status, assessment,
    screening response), Goal, Condition, QuestionnaireResponse or CarePlan.
"""

from __future__ import annotations

from collections.abc import Mapping

from fhir_server.errors import Issue
from fhir_server.workflow.canonical import SDOHCC_CODES
from fhir_server.workflow.refs import normalize_ref, ref_type, reference_of, same_ref

RESULTING_ACTIVITY = "resulting-activity"
ADDITIONAL_CONTENT = "additional-content"
ADDITIONAL_CONTENT_TYPES = frozenset(
    {"Observation", "Goal", "Condition", "QuestionnaireResponse", "CarePlan"}
)
PROCEDURE_CODE_SYSTEMS = frozenset({
    "http://snomed.info/sct",
    "http://www.ama-assn.org/go/cpt",
    "urn:oid:2.16.840.1.113883.6.285",  # HCPCS Level II
    "http://www.cms.gov/Medicare/Coding/ICD10",  # ICD-10-PCS
    "http://www.ada.org/cdt",
    "http://loinc.org",
})
"""Code systems of the US Core Procedure Codes value set."""
_DEAD = frozenset({"entered-in-error", "not-done", "cancelled"})


def output_kind(output: dict) -> str | None:
    """`resulting-activity`, `additional-content` or None (another, unprofiled output)."""
    for coding in (output.get("type") or {}).get("coding") or []:
        if coding.get("system") == SDOHCC_CODES and coding.get("code") in (
                RESULTING_ACTIVITY, ADDITIONAL_CONTENT):
            return coding["code"]
    return None


def lookup(targets: Mapping[str, dict], ref: str | None) -> dict | None:
    """The resolved resource for `ref` (exact key first, then version-less/relative match)."""
    if not ref:
        return None
    if ref in targets:
        return targets[ref]
    key = normalize_ref(ref)
    for k, v in targets.items():
        if normalize_ref(k) == key:
            return v
    return None


def output_issues(task: dict, focus_ref: str | None, focus_sr: dict | None,
                  targets: Mapping[str, dict], *, require_outcome: bool) -> list[Issue]:
    """Problems with the Task's outputs; with `require_outcome`, also a missing outcome."""
    issues: list[Issue] = []
    qualifying = 0
    focus_refs = [r for r in (focus_ref, _sr_ref(focus_sr)) if r]
    for i, output in enumerate(task.get("output") or []):
        kind = output_kind(output)
        where = f"Task.output[{i}]"
        if kind == RESULTING_ACTIVITY:
            ok, problem = _resulting_activity(output, focus_refs, targets, where)
        elif kind == ADDITIONAL_CONTENT:
            ok, problem = _additional_content(output, targets, where)
        else:
            continue
        if problem:
            issues.append(problem)
        qualifying += ok
    if require_outcome and not qualifying and not issues:
        issues.append(Issue(
            "error", "business-rule",
            "A completed referral Task needs at least one Task.output: a resulting-activity "
            "Procedure based on the focus ServiceRequest, a resulting-activity procedure code, "
            "or additional-content (e.g. enrollment status or assessment)", ["Task.output"]))
    return issues


def _sr_ref(focus_sr: dict | None) -> str | None:
    if focus_sr and focus_sr.get("id"):
        return f"ServiceRequest/{focus_sr['id']}"
    return None


def _resulting_activity(output: dict, focus_refs: list[str], targets: Mapping[str, dict],
                        where: str) -> tuple[bool, Issue | None]:
    if "valueCodeableConcept" in output:
        codings = output["valueCodeableConcept"].get("coding") or []
        if any(c.get("code") and c.get("system") in PROCEDURE_CODE_SYSTEMS for c in codings):
            return True, None
        return False, Issue("error", "business-rule",
                            "A resulting-activity code must be a procedure code (SNOMED CT, CPT, "
                            "HCPCS, ICD-10-PCS, CDT or LOINC)", [f"{where}.valueCodeableConcept"])
    ref = reference_of(output.get("valueReference"))
    if ref is None:
        return False, Issue("error", "business-rule",
                            "A resulting-activity output needs valueReference (Procedure) or "
                            "valueCodeableConcept (procedure code)", [where])
    expr = [f"{where}.valueReference"]
    if ref_type(ref) != "Procedure":
        return False, Issue("error", "business-rule",
                            f"A resulting-activity reference must be a Procedure, not {ref}", expr)
    procedure = lookup(targets, ref)
    if procedure is None or procedure.get("resourceType") != "Procedure":
        return False, Issue("error", "not-found", f"Output {ref} could not be resolved", expr)
    if procedure.get("status") in _DEAD:
        return False, Issue("error", "business-rule",
                            f"{ref} has status {procedure.get('status')}: it is no outcome", expr)
    if not _based_on_focus(procedure, focus_refs, targets):
        return False, Issue("error", "business-rule",
                            f"{ref} is not based on the Task's focus ServiceRequest "
                            f"({focus_refs[0] if focus_refs else 'none'})", expr)
    return procedure.get("status") == "completed", None


def _based_on_focus(procedure: dict, focus_refs: list[str], targets: Mapping[str, dict]) -> bool:
    for based in procedure.get("basedOn") or []:
        ref = reference_of(based)
        if any(same_ref(ref, f) for f in focus_refs):
            return True
        sr = lookup(targets, ref)
        if sr and sr.get("resourceType") == "ServiceRequest":
            parents = [reference_of(b) for b in sr.get("basedOn") or []]
            if any(same_ref(p, f) for p in parents for f in focus_refs):
                return True
    return False


def _additional_content(output: dict, targets: Mapping[str, dict],
                        where: str) -> tuple[bool, Issue | None]:
    ref = reference_of(output.get("valueReference"))
    expr = [f"{where}.valueReference"]
    if ref is None:
        return False, Issue("error", "business-rule",
                            "An additional-content output needs a valueReference", [where])
    rtype = ref_type(ref)
    if rtype not in ADDITIONAL_CONTENT_TYPES:
        return False, Issue("error", "business-rule",
                            f"additional-content must reference one of "
                            f"{', '.join(sorted(ADDITIONAL_CONTENT_TYPES))}, not {ref}", expr)
    target = lookup(targets, ref)
    if target is None or target.get("resourceType") != rtype:
        return False, Issue("error", "not-found", f"Output {ref} could not be resolved", expr)
    if target.get("status") in _DEAD:
        return False, Issue("error", "business-rule",
                            f"{ref} has status {target.get('status')}: it is no outcome", expr)
    return True, None
