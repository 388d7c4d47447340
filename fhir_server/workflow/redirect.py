"""`POST Task/[id]/$redirect`: reject the current Task and hand the referral to a new owner.

Links (both ways, so the chain is visible from either end):
  * rejected Task: extension `task-redirected-to` (our canonical) -> Reference(new Task);
  * new Task: core extension `http://hl7.org/fhir/StructureDefinition/task-replaces`
    -> Reference(rejected Task).
Both Tasks keep the same `groupIdentifier` when the original has one. The new Task copies the
referral (focus, for, requester, priority, input, partOf, ...) with `status = requested`,
`owner = target`, `authoredOn = now`. Store both in one transaction; the plan is already
checked against the workflow rules.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Mapping
from datetime import datetime

from fhir_server.errors import FhirError
from fhir_server.workflow.access_context import AccessContext, is_privileged, represents
from fhir_server.workflow.canonical import EXT_REDIRECTED_TO, EXT_REPLACES
from fhir_server.workflow.refs import ref_type, reference_of, resource_ref, same_ref
from fhir_server.workflow.stalled import clear_stalled
from fhir_server.workflow.task_rules import is_referral_task
from fhir_server.workflow.times import format_instant

TARGET_TYPES = ("Organization", "HealthcareService")
_NOT_COPIED = ("id", "meta", "text", "identifier", "owner", "status", "statusReason",
               "businessStatus", "output", "lastModified", "executionPeriod", "extension")
_TARGET_EXPR = "Parameters.parameter.where(name='target').value"
_REASON_EXPR = "Parameters.parameter.where(name='reason').value"


def parse_redirect_parameters(parameters: dict) -> tuple[str, str]:
    """(target reference, reason) from the operation's input Parameters (400 if malformed)."""
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "$redirect expects a Parameters resource")
    values = {p.get("name"): p for p in parameters.get("parameter") or []}
    target = reference_of((values.get("target") or {}).get("valueReference"))
    reason = (values.get("reason") or {}).get("valueString")
    if not target:
        raise FhirError(400, "required", "Parameter 'target' (valueReference) is required",
                        _TARGET_EXPR)
    if not isinstance(reason, str) or not reason.strip():
        raise FhirError(400, "required", "Parameter 'reason' (valueString) is required",
                        _REASON_EXPR)
    return target, reason.strip()


def plan_redirect(
    task: dict,
    target_ref: str,
    reason: str,
    ctx: AccessContext,
    *,
    now: datetime,
    target: dict | None,
    new_id: str | None = None,
    party_organizations: Mapping[str, str] | None = None,
) -> tuple[dict, dict]:
    """(the rejected Task, the new Task for `target_ref`), linked both ways.

    target: the resolved Organization/HealthcareService (None when unknown -> 422 not-found).
    Only the Task's owner (or a privileged context) may redirect, and only a requested Task.
    """
    if not is_referral_task(task):
        raise FhirError(422, "business-rule", "$redirect applies to referral Tasks only", "Task")
    owner = reference_of(task.get("owner"))
    if not is_privileged(ctx) and not represents(ctx, owner, party_organizations):
        raise FhirError(403, "forbidden",
                        f"Only the Task owner ({owner or 'none'}) may redirect it; the "
                        "requester may change Task.owner while the Task is requested",
                        "Task.owner")
    if task.get("status") != "requested":
        raise FhirError(422, "business-rule",
                        f"Only a requested Task can be redirected; this one is "
                        f"{task.get('status')}", "Task.status")
    _check_target(task, target_ref, target)
    if not reason or not reason.strip():
        raise FhirError(400, "required", "A redirect reason is required", _REASON_EXPR)
    new_id = new_id or str(uuid.uuid4())
    stamp = format_instant(now)
    rejected = clear_stalled(copy.deepcopy(task))
    rejected["status"] = "rejected"
    rejected["statusReason"] = {"text": reason.strip()}
    rejected["lastModified"] = stamp
    _add_ext(rejected, EXT_REDIRECTED_TO, f"Task/{new_id}")
    successor = {k: copy.deepcopy(v) for k, v in task.items() if k not in _NOT_COPIED}
    successor.update({"resourceType": "Task", "id": new_id, "status": "requested",
                      "owner": {"reference": target_ref}, "authoredOn": stamp,
                      "lastModified": stamp})
    if (task.get("meta") or {}).get("profile"):
        successor["meta"] = {"profile": list(task["meta"]["profile"])}
    if isinstance(target, dict) and target.get("name"):
        successor["owner"]["display"] = target["name"]
    kept = [e for e in task.get("extension") or []
            if e.get("url") not in (EXT_REPLACES, EXT_REDIRECTED_TO)]
    if kept:
        successor["extension"] = copy.deepcopy(kept)
    _add_ext(successor, EXT_REPLACES, resource_ref(task))
    return rejected, successor


def _check_target(task: dict, target_ref: str, target: dict | None) -> None:
    rtype = ref_type(target_ref)
    if rtype not in TARGET_TYPES:
        raise FhirError(422, "business-rule",
                        f"A redirect target must be an Organization or HealthcareService, "
                        f"not {target_ref}", _TARGET_EXPR)
    if target is None or target.get("resourceType") != rtype:
        raise FhirError(422, "not-found", f"Redirect target {target_ref} is not known",
                        _TARGET_EXPR)
    if target.get("active") is False:
        raise FhirError(422, "business-rule", f"Redirect target {target_ref} is not active",
                        _TARGET_EXPR)
    if same_ref(target_ref, reference_of(task.get("owner"))):
        raise FhirError(422, "business-rule",
                        f"{target_ref} already owns this Task", _TARGET_EXPR)


def _add_ext(resource: dict, url: str, ref: str) -> None:
    exts = [e for e in resource.get("extension") or [] if e.get("url") != url]
    exts.append({"url": url, "valueReference": {"reference": ref}})
    resource["extension"] = exts


def redirect_links(task: dict) -> dict[str, str | None]:
    """{"replaces": ..., "redirectedTo": ...}: the Task's neighbours in a redirect chain."""
    out: dict[str, str | None] = {"replaces": None, "redirectedTo": None}
    for ext in task.get("extension") or []:
        if ext.get("url") == EXT_REPLACES:
            out["replaces"] = reference_of(ext.get("valueReference"))
        elif ext.get("url") == EXT_REDIRECTED_TO:
            out["redirectedTo"] = reference_of(ext.get("valueReference"))
    return out
