"""ServiceRequest lifecycle rules and the referral Tasks that follow it (pure functions).

The ServiceRequest is "generally fully in the control of the requester" (SDOHCC): only the
requester (or a privileged context) may create or change it. When the requester completes,
revokes or enters-in-error the ServiceRequest, its open referral Tasks follow: they are
cancelled (entered-in-error for an entered-in-error request) with a reason. Draft Tasks are
left alone: they can no longer be requested because their ServiceRequest is not active.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from datetime import datetime

from fhir_server.errors import FhirError
from fhir_server.workflow.access_context import AccessContext, is_privileged, represents
from fhir_server.workflow.refs import reference_of, resource_ref, same_ref
from fhir_server.workflow.stalled import clear_stalled
from fhir_server.workflow.task_rules import TRANSITIONS, is_referral_task

SR_STATUSES = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")
_E = "entered-in-error"
SR_TRANSITIONS: dict[str, frozenset[str]] = {
    "draft": frozenset({"active", "revoked", _E}),
    "active": frozenset({"on-hold", "revoked", "completed", _E}),
    "on-hold": frozenset({"active", "revoked", "completed", _E}),
    "revoked": frozenset({_E}),
    "completed": frozenset({_E}),
    _E: frozenset(),
    "unknown": frozenset({"draft", "active", "on-hold", "revoked", "completed", _E}),
}
"""Allowed ServiceRequest status changes (R4 request-status, terminal states stay terminal)."""
CLOSING = frozenset({"revoked", "completed", _E})
FIXED_AFTER_DRAFT = ("subject", "intent", "requester", "basedOn")
_FOLLOW_OPEN = frozenset({"requested", "accepted", "in-progress", "on-hold"})


def check_service_request_write(
    previous: dict | None,
    new: dict,
    ctx: AccessContext,
    *,
    party_organizations: Mapping[str, str] | None = None,
) -> None:
    """Refuse a ServiceRequest create/update that breaks the lifecycle rules (403/422)."""
    status = new.get("status")
    if status not in SR_STATUSES:
        raise FhirError(422, "code-invalid",
                        f"Unknown ServiceRequest.status {status!r}; expected one of: "
                        f"{', '.join(SR_STATUSES)}", "ServiceRequest.status")
    if new.get("intent") == "filler-order" and not new.get("basedOn"):
        raise FhirError(422, "business-rule",
                        "A filler-order ServiceRequest must be basedOn the original request",
                        "ServiceRequest.basedOn")
    owner_ref = reference_of((previous or new).get("requester"))
    if not is_privileged(ctx) and not represents(ctx, owner_ref, party_organizations):
        raise FhirError(403, "forbidden",
                        f"Only the requester ({owner_ref or 'none given'}) may "
                        f"{'create' if previous is None else 'change'} this ServiceRequest",
                        "ServiceRequest.requester")
    if previous is None:
        return
    old = previous.get("status")
    if old != status and status not in SR_TRANSITIONS.get(old, frozenset()):
        nxt = sorted(SR_TRANSITIONS.get(old, frozenset()))
        raise FhirError(422, "business-rule",
                        f"ServiceRequest.status cannot change from {old} to {status}; allowed "
                        f"next states from {old}: {', '.join(nxt) or 'none (terminal)'}",
                        "ServiceRequest.status")
    if old != "draft":
        fixed = [f for f in FIXED_AFTER_DRAFT if previous.get(f) != new.get(f)]
        if fixed:
            raise FhirError(422, "business-rule",
                            f"ServiceRequest.{fixed[0]} cannot change once the request is "
                            "no longer draft", [f"ServiceRequest.{f}" for f in fixed])


def follow_up_task_changes(
    previous_sr: dict | None,
    new_sr: dict,
    open_tasks: list[dict],
    *,
    now: datetime | None = None,
) -> list[dict]:
    """The referral Tasks to update because the ServiceRequest was closed.

    Returns updated copies (inputs untouched): status cancelled (entered-in-error when the
    request is entered-in-error), `statusReason.text` naming the cause, `lastModified` = now,
    stalled mark removed. Store them with a privileged context in the same transaction.
    """
    old = (previous_sr or {}).get("status")
    status = new_sr.get("status")
    if status not in CLOSING or old == status:
        return []
    sr_ref = resource_ref(new_sr)
    target = "entered-in-error" if status == _E else "cancelled"
    verb = {"revoked": "revoked", "completed": "completed", _E: "entered in error"}[status]
    reason = f"{sr_ref} was {verb} by the requester"
    out = []
    for task in open_tasks:
        if not is_referral_task(task) or task.get("status") not in _FOLLOW_OPEN:
            continue
        if not same_ref(reference_of(task.get("focus")), sr_ref):
            continue
        if target not in TRANSITIONS[task["status"]]:
            continue
        updated = clear_stalled(copy.deepcopy(task))
        updated["status"] = target
        updated["statusReason"] = {"text": reason}
        if now is not None:
            updated["lastModified"] = now.isoformat()
        out.append(updated)
    return out
