"""Coordination-platform mode (indirect referral): our server is the intermediary.

SDOHCC §refer-1/2: when the platform accepts a source Task it creates its own ServiceRequest
(`intent = filler-order`, `basedOn` the original) and a sub-Task for the chosen recipient
(`partOf` the source Task, `focus` the platform ServiceRequest). Sub-Task progress is then
reflected onto the source Task, and cancellation travels both ways with its reason.
All functions return new dicts (inputs untouched); the caller stores them in one transaction.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from fhir_server.errors import FhirError
from fhir_server.workflow.access_context import AccessContext, is_privileged, represents
from fhir_server.workflow.canonical import SDOHCC_CODES
from fhir_server.workflow.refs import ref_type, reference_of, resource_ref, same_ref
from fhir_server.workflow.stalled import clear_stalled
from fhir_server.workflow.task_rules import OPEN, TRANSITIONS, is_referral_task
from fhir_server.workflow.times import format_instant

SR_PROFILE = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/SDOHCC-ServiceRequest"
_SR_COPIED = ("category", "code", "subject", "priority", "occurrenceDateTime",
              "occurrencePeriod", "occurrenceTiming", "reasonCode", "reasonReference",
              "supportingInfo", "orderDetail", "extension", "patientInstruction", "note")
_TASK_COPIED = ("intent", "code", "for", "priority", "input", "description", "restriction")
_REFLECT = {"accepted": "in-progress", "in-progress": "in-progress", "on-hold": "on-hold",
            "completed": "completed", "failed": "failed", "cancelled": "cancelled"}


@dataclass(frozen=True)
class PlatformAcceptance:
    """What accepting a source Task produces."""

    source_task: dict
    service_request: dict
    sub_task: dict


def is_platform_subtask(task: dict, platform_org: str) -> bool:
    """A referral Task the platform created for a recipient (partOf a source Task)."""
    return (is_referral_task(task) and bool(task.get("partOf"))
            and same_ref(reference_of(task.get("requester")), platform_org))


def plan_platform_acceptance(
    source_task: dict,
    source_sr: dict,
    ctx: AccessContext,
    *,
    platform_org: str,
    recipient_ref: str,
    recipient: dict | None,
    now: datetime,
    sr_id: str | None = None,
    sub_task_id: str | None = None,
    party_organizations: Mapping[str, str] | None = None,
) -> PlatformAcceptance:
    """Accept `source_task` on behalf of the platform and route it to `recipient_ref`."""
    if not is_referral_task(source_task):
        raise FhirError(422, "business-rule", "Only referral Tasks can be routed", "Task")
    if not (is_privileged(ctx) or represents(ctx, platform_org, party_organizations)):
        raise FhirError(403, "forbidden", "Only the coordination platform may route this Task")
    owner = reference_of(source_task.get("owner"))
    if owner and not same_ref(owner, platform_org):
        raise FhirError(403, "forbidden",
                        f"The Task is owned by {owner}, not by the platform {platform_org}",
                        "Task.owner")
    if source_task.get("status") not in ("requested", "accepted"):
        raise FhirError(422, "business-rule",
                        f"A {source_task.get('status')} Task cannot be routed to a recipient",
                        "Task.status")
    if source_sr.get("status") != "active":
        raise FhirError(422, "business-rule",
                        f"The referral's ServiceRequest is {source_sr.get('status')}, not active",
                        "Task.focus")
    if ref_type(recipient_ref) not in ("Organization", "HealthcareService") or not recipient \
            or recipient.get("resourceType") != ref_type(recipient_ref):
        raise FhirError(422, "not-found", f"Recipient {recipient_ref} is not known")
    if recipient.get("active") is False:
        raise FhirError(422, "business-rule", f"Recipient {recipient_ref} is not active")
    stamp = format_instant(now)
    accepted = clear_stalled(source_task)
    accepted.update({"status": "accepted", "lastModified": stamp})
    accepted.setdefault("owner", {"reference": platform_org})
    accepted.pop("statusReason", None)
    sr = _platform_sr(source_task, source_sr, platform_org, recipient_ref, stamp, sr_id)
    sub = {k: copy.deepcopy(source_task[k]) for k in _TASK_COPIED if k in source_task}
    sub.update({
        "resourceType": "Task", "id": sub_task_id or str(uuid.uuid4()),
        "status": "requested", "partOf": [{"reference": resource_ref(source_task)}],
        "focus": {"reference": resource_ref(sr)}, "requester": {"reference": platform_org},
        "owner": {"reference": recipient_ref}, "authoredOn": stamp, "lastModified": stamp,
    })
    if (source_task.get("meta") or {}).get("profile"):
        sub["meta"] = {"profile": list(source_task["meta"]["profile"])}
    return PlatformAcceptance(accepted, sr, sub)


def _platform_sr(task: dict, source_sr: dict, platform_org: str, recipient_ref: str,
                 stamp: str, sr_id: str | None) -> dict:
    sr = {k: copy.deepcopy(source_sr[k]) for k in _SR_COPIED if k in source_sr}
    sr.update({
        "resourceType": "ServiceRequest", "id": sr_id or str(uuid.uuid4()),
        "meta": {"profile": [SR_PROFILE]}, "status": "active", "intent": "filler-order",
        "basedOn": [{"reference": reference_of(task.get("focus")) or resource_ref(source_sr)}],
        "requester": {"reference": platform_org}, "performer": [{"reference": recipient_ref}],
        "authoredOn": stamp,
    })
    return sr


def reflect_subtask_change(
    previous_sub: dict | None,
    new_sub: dict,
    source_task: dict,
    *,
    now: datetime,
    procedures: Iterable[dict] = (),
) -> dict | None:
    """The source Task update a sub-Task status change implies (None when nothing to do).

    accepted/in-progress -> in-progress; on-hold, failed, cancelled -> the same with the
    sub-Task's reason; completed -> completed with the sub-Task's outputs and the recipient's
    `procedures` linked as resulting-activity outputs. A rejected sub-Task changes nothing:
    the platform routes the referral elsewhere.
    """
    status = new_sub.get("status")
    if previous_sub is not None and previous_sub.get("status") == status:
        return None
    target = _REFLECT.get(status or "")
    current = source_task.get("status")
    if target is None or current == target or target not in TRANSITIONS.get(current, ()):
        return None
    out = clear_stalled(source_task)
    out["status"] = target
    out["lastModified"] = format_instant(now)
    reason = (new_sub.get("statusReason") or {}).get("text")
    if target in ("on-hold", "failed", "cancelled"):
        out["statusReason"] = {"text": reason or f"Recipient set the referral {status}"}
    else:
        out.pop("statusReason", None)
    if target == "completed":
        out["output"] = _merge_outputs(source_task.get("output") or [],
                                       new_sub.get("output") or [], procedures)
    return out


def _merge_outputs(existing: list, from_sub: list, procedures: Iterable[dict]) -> list:
    merged = copy.deepcopy(existing)
    seen = {reference_of(o.get("valueReference")) for o in merged} - {None}
    for output in from_sub:
        ref = reference_of(output.get("valueReference"))
        if ref is None or ref not in seen:
            merged.append(copy.deepcopy(output))
            seen.add(ref)
    for procedure in procedures:
        ref = resource_ref(procedure)
        if ref not in seen:
            merged.append({"type": {"coding": [{"system": SDOHCC_CODES,
                                                "code": "resulting-activity"}]},
                           "valueReference": {"reference": ref}})
            seen.add(ref)
    return merged


def propagate_source_cancellation(
    previous_source: dict | None,
    new_source: dict,
    sub_tasks: Iterable[dict],
    platform_requests: Iterable[dict] = (),
    *,
    now: datetime,
) -> list[dict]:
    """When the source Task is cancelled (or entered-in-error): cancel its open sub-Tasks with
    the same reason and revoke the platform ServiceRequests they fulfil."""
    status = new_source.get("status")
    if status not in ("cancelled", "entered-in-error") or (
            previous_source or {}).get("status") == status:
        return []
    reason = (new_source.get("statusReason") or {}).get("text") or "Source referral cancelled"
    stamp = format_instant(now)
    source_ref = resource_ref(new_source)
    changed: list[dict] = []
    focuses = set()
    for sub in sub_tasks:
        parts = [reference_of(p) for p in sub.get("partOf") or []]
        if not any(same_ref(p, source_ref) for p in parts) or sub.get("status") not in OPEN:
            continue
        target = "cancelled" if "cancelled" in TRANSITIONS[sub["status"]] else "entered-in-error"
        updated = clear_stalled(sub)
        updated.update({"status": target, "statusReason": {"text": reason},
                        "lastModified": stamp})
        changed.append(updated)
        focuses.add(reference_of(sub.get("focus")))
    for sr in platform_requests:
        if resource_ref(sr) in focuses and sr.get("status") in ("draft", "active", "on-hold"):
            revoked = copy.deepcopy(sr)
            revoked["status"] = "revoked"
            changed.append(revoked)
    return changed
