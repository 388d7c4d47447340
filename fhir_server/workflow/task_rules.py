"""Referral Task rules: the state machine and who may change what (pure functions).

`check_task_write` is called on every write path (create, update, PATCH, conditional update,
transaction entries) with the stored version (None on create), the version to store and the
caller's `AccessContext`. It raises `FhirError` (422 business-rule / code-invalid, 403
forbidden) and returns None when the write may proceed. Tasks that are not referral Tasks are
left to other rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.workflow import open_referral
from fhir_server.workflow.access_context import AccessContext, is_privileged, represents
from fhir_server.workflow.canonical import (
    PATIENT_TASK_PROFILE,
    REFERRAL_TASK_PROFILE,
    STALLED_SYSTEM,
    TASK_CODE_SYSTEM,
)
from fhir_server.workflow.outputs import output_issues
from fhir_server.workflow.refs import ref_type, reference_of, same_ref

REFERRAL_STATUSES: tuple[str, ...] = (
    "draft", "requested", "accepted", "rejected", "cancelled",
    "in-progress", "on-hold", "failed", "completed", "entered-in-error",
)
"""SDOHCC ValueSet Referral Task Status: task-status without `received` and `ready`."""

BASE_TASK_STATUSES = frozenset(REFERRAL_STATUSES) | {"received", "ready"}

TERMINAL = frozenset({"rejected", "cancelled", "failed", "completed", "entered-in-error"})
OPEN = frozenset({"draft", "requested", "accepted", "in-progress", "on-hold"})

_E = "entered-in-error"
TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"requested", _E}),
    "requested": frozenset({"accepted", "rejected", "cancelled", _E}),
    "accepted": frozenset({"in-progress", "on-hold", "cancelled", "completed", "failed", _E}),
    "in-progress": frozenset({"on-hold", "cancelled", "completed", "failed", _E}),
    "on-hold": frozenset({"in-progress", "cancelled", "completed", "failed", _E}),
    "rejected": frozenset({_E}),
    "cancelled": frozenset({_E}),
    "failed": frozenset({_E}),
    "completed": frozenset({_E}),
    _E: frozenset(),
}
"""Allowed next statuses. Terminal states only admit the `entered-in-error` correction."""

INITIAL_STATUSES = frozenset({"draft", "requested"})
REQUESTER_SETS = frozenset({"requested", "cancelled", _E})
OWNER_SETS = frozenset(
    {"accepted", "rejected", "in-progress", "on-hold", "completed", "failed", "cancelled"}
)
REASON_REQUIRED = frozenset({"rejected", "cancelled", "on-hold", "failed"})
OWNER_FIELDS = frozenset({"status", "statusReason", "output"})
CLAIM_FIELDS = OWNER_FIELDS | {"owner"}
IGNORED_FIELDS = frozenset({"id", "meta", "text", "lastModified"})
"""Elements that never count as a change (server-managed or narrative)."""
FIXED_AFTER_DRAFT = ("focus", "for", "code", "intent", "requester", "authoredOn", "partOf")
SR_MUST_BE_ACTIVE = frozenset({"requested", "accepted", "in-progress"})

_ETAG = re.compile(r'^\s*(?:W/)?"?([^"]*)"?\s*$')


def allowed_next(status: str | None) -> list[str]:
    """Sorted statuses a referral Task in `status` may move to (empty for unknown)."""
    return sorted(TRANSITIONS.get(status or "", frozenset()))


def is_referral_task(task: dict | None) -> bool:
    """True for an SDOHCC Task For Referral Management.

    Either it claims the profile, or (not claiming the patient-task profile) it has
    `code = task-code#fulfill` and a `focus` on a ServiceRequest.
    """
    if not isinstance(task, dict) or task.get("resourceType") != "Task":
        return False
    profiles = (task.get("meta") or {}).get("profile") or []
    if REFERRAL_TASK_PROFILE in profiles:
        return True
    if PATIENT_TASK_PROFILE in profiles:
        return False
    codings = (task.get("code") or {}).get("coding") or []
    fulfil = any(c.get("system") == TASK_CODE_SYSTEM and c.get("code") == "fulfill"
                 for c in codings if isinstance(c, dict))
    return fulfil and ref_type(reference_of(task.get("focus"))) == "ServiceRequest"


def check_task_write(
    previous: dict | None,
    new: dict,
    ctx: AccessContext,
    *,
    focus_service_request: dict | None,
    output_targets: Mapping[str, dict],
    party_organizations: Mapping[str, str] | None = None,
) -> None:
    """Refuse a referral Task create/update that breaks the workflow rules.

    focus_service_request: the resolved `Task.focus` ServiceRequest (None if unresolvable;
      required on create and when moving into requested/accepted/in-progress).
    output_targets: resolved `Task.output.valueReference` targets keyed by the reference as
      written (and, for indirect referrals, the ServiceRequests those Procedures are based on).
    party_organizations: PractitionerRole/HealthcareService reference -> Organization reference,
      used to decide whether the caller acts for Task.requester / Task.owner.
    """
    if not (is_referral_task(new) or is_referral_task(previous)):
        return
    _check_status_code(new)
    if previous is None:
        _check_create(new, ctx, focus_service_request, party_organizations)
    else:
        _check_update(previous, new, ctx, party_organizations)
    open_referral.check_open_content(previous, new)
    _check_content(previous, new, focus_service_request, output_targets)


def check_task_delete(
    previous: dict,
    ctx: AccessContext,
    *,
    party_organizations: Mapping[str, str] | None = None,
) -> None:
    """Only a draft referral Task may be deleted, by its requester; otherwise the closed loop
    keeps its record and the way out is status entered-in-error (422) or cancelled."""
    if not is_referral_task(previous):
        return
    requester = reference_of(previous.get("requester"))
    if not is_privileged(ctx) and not represents(ctx, requester, party_organizations):
        raise FhirError(403, "forbidden", "Only the Task's requester may delete it", "Task")
    if previous.get("status") != "draft":
        raise FhirError(422, "business-rule",
                        f"A {previous.get('status')} referral Task cannot be deleted; set its "
                        "status to entered-in-error (or cancelled) instead", "Task.status")


def check_task_version(
    current_version: str | None, if_match: str | None, *, required: bool = True
) -> None:
    """Version-aware update: 428 when If-Match is required but absent, 412 when stale."""
    if not if_match:
        if required:
            raise FhirError(428, "required",
                            "Task updates must be version-aware: send If-Match: W/\"<versionId>\"")
        return
    match = _ETAG.match(if_match)
    wanted = match.group(1) if match else if_match
    if current_version is not None and wanted != str(current_version):
        raise FhirError(412, "conflict",
                        f"If-Match version {wanted} is stale: the current version is "
                        f"{current_version}; read the Task again and retry")


# --------------------------------------------------------------------------- status codes

def _check_status_code(task: dict) -> None:
    status = task.get("status")
    if status in ("received", "ready"):
        raise FhirError(422, "code-invalid",
                        f"Task.status '{status}' is not allowed for referral Tasks (SDOHCC "
                        f"ValueSet Referral Task Status excludes received and ready); "
                        f"use one of: {', '.join(REFERRAL_STATUSES)}", "Task.status")
    if status not in REFERRAL_STATUSES:
        raise FhirError(422, "code-invalid",
                        f"Unknown Task.status {status!r}; expected one of: "
                        f"{', '.join(REFERRAL_STATUSES)}", "Task.status")


# --------------------------------------------------------------------------- create

def _check_create(new: dict, ctx: AccessContext, focus_sr: dict | None,
                  party_orgs: Mapping[str, str] | None) -> None:
    status = new["status"]
    if status not in INITIAL_STATUSES:
        raise FhirError(422, "business-rule",
                        f"A referral Task must be created as draft or requested, not {status}",
                        "Task.status")
    requester = reference_of(new.get("requester"))
    if not is_privileged(ctx) and not represents(ctx, requester, party_orgs):
        raise FhirError(403, "forbidden",
                        f"Only the requester ({requester or 'none given'}) may create this "
                        "referral Task", "Task.requester")
    if focus_sr is None:
        raise FhirError(422, "business-rule",
                        "Task.focus must reference a ServiceRequest this server can resolve",
                        "Task.focus")


# --------------------------------------------------------------------------- update

def _check_update(previous: dict, new: dict, ctx: AccessContext,
                  party_orgs: Mapping[str, str] | None) -> None:
    old_status, new_status = previous.get("status"), new["status"]
    privileged = is_privileged(ctx)
    is_requester = represents(ctx, reference_of(previous.get("requester")), party_orgs)
    is_owner = represents(ctx, reference_of(previous.get("owner")), party_orgs)
    claiming = _is_claim(previous, new, ctx, party_orgs)
    declining = not (privileged or is_requester or is_owner) and open_referral.is_decline(
        previous, new, ctx, party_orgs)
    if not (privileged or is_requester or is_owner or claiming or declining):
        raise FhirError(403, "forbidden",
                        "Only the Task's author (requester) or owner may change a referral "
                        "Task", "Task")
    if claiming:
        open_referral.check_claim(previous, ctx, party_orgs)
    if declining:
        open_referral.check_decline(previous, new, ctx, party_orgs)
        return
    changed = changed_fields(previous, new)
    if old_status != new_status:
        _check_transition(old_status, new_status)
        _check_status_role(new_status, privileged, is_requester, is_owner or claiming)
    if old_status in TERMINAL:
        extra = changed - {"status", "statusReason"}
        if extra or old_status == new_status and changed:
            raise FhirError(422, "business-rule",
                            f"The Task is {old_status} (terminal): only a correction to "
                            f"entered-in-error is possible",
                            [f"Task.{f}" for f in sorted(extra or changed)])
    if privileged:
        _check_fixed_fields(previous, new, changed)
        return
    if is_requester:
        _check_fixed_fields(previous, new, changed)
        return
    allowed = CLAIM_FIELDS if claiming else OWNER_FIELDS
    forbidden = sorted(changed - allowed)
    if forbidden:
        raise FhirError(403, "forbidden",
                        "The Task owner may change only status, statusReason and output; "
                        f"not {', '.join(forbidden)}",
                        issues=[Issue("error", "forbidden",
                                      f"The Task owner may not change Task.{f}", [f"Task.{f}"])
                                for f in forbidden])


def _is_claim(previous: dict, new: dict, ctx: AccessContext,
              party_orgs: Mapping[str, str] | None) -> bool:
    """An "open" requested Task (no owner) claimed by the caller, who accepts it."""
    return (not previous.get("owner") and previous.get("status") == "requested"
            and new.get("status") == "accepted"
            and represents(ctx, reference_of(new.get("owner")), party_orgs))


def _check_transition(old: str | None, new: str) -> None:
    nxt = allowed_next(old)
    if new not in nxt:
        raise FhirError(422, "business-rule",
                        f"Task.status cannot change from {old} to {new}; allowed next "
                        f"states from {old}: {', '.join(nxt) or 'none (terminal)'}",
                        "Task.status")


def _check_status_role(new: str, privileged: bool, is_requester: bool, is_owner: bool) -> None:
    if privileged or (is_requester and new in REQUESTER_SETS) or (is_owner and new in OWNER_SETS):
        return
    none: frozenset[str] = frozenset()
    may = (REQUESTER_SETS if is_requester else none) | (OWNER_SETS if is_owner else none)
    who = " and ".join(w for w, yes in (("requester", is_requester), ("owner", is_owner)) if yes)
    raise FhirError(403, "forbidden",
                    f"The Task {who} may not set status {new}; the {who} may set: "
                    f"{', '.join(sorted(may))}", "Task.status")


def _check_fixed_fields(previous: dict, new: dict, changed: set[str]) -> None:
    if previous.get("status") == "draft":
        return
    issues = [Issue("error", "business-rule",
                    f"Task.{f} cannot change once the referral has been requested", [f"Task.{f}"])
              for f in FIXED_AFTER_DRAFT if f in changed]
    if "owner" in changed and previous.get("owner") and previous.get("status") not in (
            "draft", "requested"):
        issues.append(Issue("error", "business-rule",
                            f"Task.owner cannot change once the Task is {previous.get('status')}"
                            "; cancel it or use $redirect while it is requested",
                            ["Task.owner"]))
    if issues:
        raise FhirError(422, "business-rule", issues[0].diagnostics, issues=issues)


def changed_fields(previous: dict, new: dict) -> set[str]:
    """Top-level elements that differ (ignoring id/meta/text/lastModified and stalled marks)."""
    keys = (set(previous) | set(new)) - IGNORED_FIELDS
    out = set()
    for key in keys:
        a, b = previous.get(key), new.get(key)
        if key == "businessStatus":
            a, b = _without_stalled(a), _without_stalled(b)
        if a != b:
            out.add(key)
    return out


def _without_stalled(concept: Any) -> Any:
    if not isinstance(concept, dict):
        return concept
    codings = [c for c in concept.get("coding") or [] if c.get("system") != STALLED_SYSTEM]
    rest = {k: v for k, v in concept.items() if k not in ("coding", "text")}
    if codings:
        rest["coding"] = codings
    if concept.get("text") and (codings or not concept.get("coding")):
        rest["text"] = concept["text"]
    return rest or None


# --------------------------------------------------------------------------- content rules

def _check_content(previous: dict | None, new: dict, focus_sr: dict | None,
                   targets: Mapping[str, dict]) -> None:
    status = new["status"]
    old_status = previous.get("status") if previous else None
    status_changed = status != old_status
    prev = previous or {}
    if status in REASON_REQUIRED and (status_changed or prev.get("statusReason")
                                      != new.get("statusReason")):
        text = (new.get("statusReason") or {}).get("text")
        if not isinstance(text, str) or not text.strip():
            raise FhirError(422, "business-rule",
                            f"Task.statusReason.text is required when the status is {status}",
                            "Task.statusReason.text")
    if focus_sr is not None and status_changed and (
            status in SR_MUST_BE_ACTIVE or previous is None):
        sr_status = focus_sr.get("status")
        allowed = {"draft", "active"} if status == "draft" else {"active"}
        if sr_status not in allowed:
            raise FhirError(422, "business-rule",
                            f"The focus ServiceRequest is {sr_status}: a referral Task can be "
                            f"{status} only for an active ServiceRequest", "Task.focus")
    if focus_sr is not None:
        _check_subject(new, focus_sr)
    focus_ref = reference_of(new.get("focus"))
    if prev.get("output") != new.get("output") or (status == "completed" and status_changed):
        issues = output_issues(new, focus_ref, focus_sr, targets,
                               require_outcome=status == "completed")
        if issues:
            raise FhirError(422, issues[0].code, issues[0].diagnostics, issues=issues)


def _check_subject(task: dict, focus_sr: dict) -> None:
    task_for = reference_of(task.get("for"))
    subject = reference_of(focus_sr.get("subject"))
    if subject and task_for and not same_ref(task_for, subject):
        raise FhirError(422, "business-rule",
                        f"Task.for ({task_for}) must be the focus ServiceRequest's subject "
                        f"({subject})", "Task.for")
