"""Open referrals: a referral Task offered to several candidate organizations (pure).

An open referral is a referral Task in `requested` with no `owner`, a `performerType` (the
kind of provider wanted) and one `task-candidate` extension per organization that may take
it. The first candidate to accept becomes the owner (an ordinary claim: `owner` set to
itself and `status = accepted` in one version-checked update). A candidate that does not
want it declines: it removes its own `task-candidate` entries and adds one
`task-candidate-declined` entry (its reference and a reason) in one update, changing
nothing else. When the last candidate declines, the Task is rejected in the same write
(`close_when_all_declined`). Rules: RULES.md §10.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.workflow.access_context import AccessContext, represents
from fhir_server.workflow.canonical import (
    EXT_CANDIDATE,
    EXT_CANDIDATE_DECLINED,
    STATUS_REASON_SYSTEM,
)
from fhir_server.workflow.refs import normalize_ref, ref_type, reference_of

CANDIDATE_TYPES = frozenset({"Organization", "HealthcareService"})
OPEN_EXTENSIONS = frozenset({EXT_CANDIDATE, EXT_CANDIDATE_DECLINED})
ALL_DECLINED_CODE = "all-candidates-declined"
ALL_DECLINED_TEXT = "Every provider this open referral was offered to declined it"


def candidates(task: dict | None) -> list[str]:
    """The candidate references of a Task, as written (order kept)."""
    out = []
    for ext in (task or {}).get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == EXT_CANDIDATE:
            ref = reference_of(ext.get("valueReference"))
            if ref:
                out.append(ref)
    return out


def declined(task: dict | None) -> list[tuple[str, str]]:
    """(candidate reference, reason text) of each `task-candidate-declined` entry."""
    out = []
    for ext in (task or {}).get("extension") or []:
        if not isinstance(ext, dict) or ext.get("url") != EXT_CANDIDATE_DECLINED:
            continue
        parts = {p.get("url"): p for p in ext.get("extension") or [] if isinstance(p, dict)}
        ref = reference_of((parts.get("candidate") or {}).get("valueReference"))
        reason = (parts.get("reason") or {}).get("valueCodeableConcept") or {}
        out.append((ref or "", str(reason.get("text") or "")))
    return out


def is_open(task: dict | None) -> bool:
    """Requested, without owner, with at least one candidate."""
    return bool(task) and task.get("status") == "requested" and not task.get("owner") \
        and bool(candidates(task))


def offered_to(ctx: AccessContext, task: dict | None,
               party_organizations: Mapping[str, str] | None = None) -> bool:
    """Does the caller stand for one of the Task's candidates?"""
    return any(represents(ctx, ref, party_organizations) for ref in candidates(task))


def declined_entry(candidate: str, reason_text: str, code: str | None = None) -> dict:
    """The `task-candidate-declined` extension for `candidate` declining with a reason."""
    concept: dict[str, Any] = {"text": reason_text}
    if code:
        concept["coding"] = [{"system": STATUS_REASON_SYSTEM, "code": code}]
    return {"url": EXT_CANDIDATE_DECLINED, "extension": [
        {"url": "candidate", "valueReference": {"reference": candidate}},
        {"url": "reason", "valueCodeableConcept": concept}]}


# -- checks ------------------------------------------------------------------------------
def check_open_content(previous: dict | None, new: dict) -> None:
    """What an open referral must look like (422): candidates name Organizations or
    HealthcareServices, never together with an owner on a new or requested Task, with a
    performerType; the candidate list changes only while the Task is open."""
    listed = candidates(new)
    issues = []
    for index, ref in enumerate(listed):
        if ref_type(ref) not in CANDIDATE_TYPES:
            issues.append(Issue("error", "business-rule",
                                f"A candidate must be an Organization or HealthcareService, "
                                f"not {ref}", [_candidate_path(new, index)]))
    if listed and previous is None and new.get("owner"):
        issues.append(Issue("error", "business-rule",
                            "An open referral has no owner: give Task.owner or candidates, "
                            "not both", ["Task.owner"]))
    if listed and not new.get("performerType") and (previous is None or candidates(
            previous) != listed):
        issues.append(Issue("error", "business-rule",
                            "An open referral names the kind of provider wanted in "
                            "Task.performerType", ["Task.performerType"]))
    if previous is not None and candidates(previous) != listed and not is_open(previous) \
            and previous.get("status") != "draft":
        issues.append(Issue("error", "business-rule",
                            "The candidates of a referral can change only while it is open "
                            "(requested, without owner)", ["Task.extension"]))
    if issues:
        raise FhirError(422, "business-rule", issues[0].diagnostics, issues=issues)


def is_decline(previous: dict, new: dict, ctx: AccessContext,
               party_organizations: Mapping[str, str] | None = None) -> bool:
    """Is this update a candidate withdrawing itself from an open referral (its candidate
    entries gone, nothing but the extensions changed)? The details are checked by
    `check_decline`."""
    if not is_open(previous) or not offered_to(ctx, previous, party_organizations):
        return False
    mine = _mine(ctx, previous, party_organizations)
    still = [ref for ref in candidates(new) if normalize_ref(ref) in mine]
    return not still and _rest(previous) == _rest(new)


def check_decline(previous: dict, new: dict, ctx: AccessContext,
                  party_organizations: Mapping[str, str] | None = None) -> None:
    """A decline removes exactly the caller's candidate entries and adds exactly one
    declined entry naming one of them with a reason text; other extensions stay (422)."""
    mine = _mine(ctx, previous, party_organizations)
    expect_candidates = [r for r in candidates(previous) if normalize_ref(r) not in mine]
    if candidates(new) != expect_candidates:
        raise FhirError(422, "business-rule", "A decline removes only your own organization "
                        "from the candidates", "Task.extension")
    others_before = _other_extensions(previous)
    if _other_extensions(new) != others_before:
        raise FhirError(422, "business-rule", "A decline changes no other extension",
                        "Task.extension")
    added = declined(new)[len(declined(previous)):]
    if declined(new)[:len(declined(previous))] != declined(previous) or len(added) != 1:
        raise FhirError(422, "business-rule", "A decline adds exactly one "
                        f"{EXT_CANDIDATE_DECLINED} entry for your organization",
                        "Task.extension")
    ref, reason = added[0]
    if normalize_ref(ref) not in mine:
        raise FhirError(422, "business-rule", "The declined entry must name your own "
                        "organization", "Task.extension")
    if not reason.strip():
        raise FhirError(422, "business-rule", "Say why your organization declines "
                        "(reason.text of the declined entry)", "Task.extension")


def check_claim(previous: dict, ctx: AccessContext,
                party_organizations: Mapping[str, str] | None = None) -> None:
    """Only a listed candidate may claim an open referral (403)."""
    if candidates(previous) and not offered_to(ctx, previous, party_organizations):
        raise FhirError(403, "forbidden", "This open referral is not offered to your "
                        "organization", "Task.owner")


# -- the transform -------------------------------------------------------------------------
def close_when_all_declined(previous: dict | None, new: dict) -> dict:
    """`new` rejected when its last candidate just declined (a declined entry added and no
    candidate left); else `new` unchanged. A requester emptying the list is no decline."""
    if previous is None or not is_open(previous) or candidates(new) or new.get("owner") \
            or new.get("status") != "requested" or len(declined(new)) <= len(
                declined(previous)):
        return new
    reasons = "; ".join(f"{ref}: {text}" for ref, text in declined(new) if text)
    closed = dict(new)
    closed["status"] = "rejected"
    closed["statusReason"] = {
        "coding": [{"system": STATUS_REASON_SYSTEM, "code": ALL_DECLINED_CODE}],
        "text": f"{ALL_DECLINED_TEXT}" + (f" ({reasons})" if reasons else "")}
    return closed


# -- helpers ---------------------------------------------------------------------------------
def _mine(ctx: AccessContext, task: dict,
          party_organizations: Mapping[str, str] | None) -> set[str]:
    return {normalize_ref(ref) or "" for ref in candidates(task)
            if represents(ctx, ref, party_organizations)} | {
        normalize_ref(ctx.organization) or ""}


def _rest(task: dict) -> dict:
    """The Task without what a decline may change (extensions) or the server sets."""
    return {k: v for k, v in task.items() if k not in ("extension", "meta", "text")}


def _other_extensions(task: dict) -> list[Any]:
    return [e for e in task.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") in OPEN_EXTENSIONS)]


def _candidate_path(task: dict, index: int) -> str:
    seen = -1
    for position, ext in enumerate(task.get("extension") or []):
        if isinstance(ext, dict) and ext.get("url") == EXT_CANDIDATE:
            seen += 1
            if seen == index:
                return f"Task.extension[{position}].value"
    return "Task.extension"
