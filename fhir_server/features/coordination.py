"""Coordination-platform mode (indirect referral) over HTTP: `POST Task/[id]/$assign-recipient`
and the write hook that keeps source Tasks and platform sub-Tasks in step.

The planning is pure (`fhir_server.workflow.platform`); this module reads what the planner
needs, stores what it returns inside the caller's transaction with the SYSTEM context, and is
installed by `fhir_server.wiring` after the workflow. Rules: fhir_server/workflow/RULES.md §7.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.features.common import access_of, party_organizations, read_ref
from fhir_server.interactions import crud
from fhir_server.interactions.caller_view import system_call
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository, StoredResource
from fhir_server.workflow.access_context import is_privileged, represents
from fhir_server.workflow.canonical import CANONICAL_BASE
from fhir_server.workflow.platform import (
    is_platform_subtask,
    plan_platform_acceptance,
    propagate_source_cancellation,
    reflect_subtask_change,
)
from fhir_server.workflow.refs import ref_type, reference_of, resource_ref, same_ref
from fhir_server.workflow.task_rules import OPEN
from fhir_server.workflow.times import format_instant

PLATFORM_ENV = "FHIR_SERVER_PLATFORM_ORGANIZATION"
RECIPIENT_TYPES = ("Organization", "HealthcareService", "PractitionerRole")
_ORG_REF = re.compile(r"^Organization/[A-Za-z0-9\-.]{1,64}$")
_RECIPIENT_EXPR = "Parameters.parameter.where(name='recipient').value"
_NOTE_EXPR = "Parameters.parameter.where(name='note').value"
# What a finished sub-Task means for the platform ServiceRequest it fulfils.
_SR_AFTER_SUBTASK = {"completed": "completed", "rejected": "revoked", "cancelled": "revoked",
                     "failed": "revoked"}


def install(services: Services, registry: OperationRegistry) -> None:
    """Register $assign-recipient and the platform write hook when the server is configured
    as a coordination platform (a malformed setting stops the start)."""
    if platform_organization(services.settings) is None:
        return
    services.phases.add("after-write", "coordination.platform-sync", _after_write,
                        order=300, types={"Task"})
    registry.register(Operation(
        name="assign-recipient", handler=_assign_recipient, types=frozenset({"Task"}),
        instance_level=True, methods=frozenset({"POST"}),
        definition=f"{CANONICAL_BASE}/OperationDefinition/Task-assign-recipient",
        documentation="Coordination platform: accept this referral Task and route it to a "
                      "recipient (platform ServiceRequest + sub-Task, one transaction)",
        affects_state=True))


def platform_organization(settings: Settings) -> str | None:
    """The configured platform Organization reference (None when the mode is off)."""
    value = (settings.platform_organization or "").strip()
    if not value:
        return None
    if not _ORG_REF.match(value):
        raise ValueError(f"{PLATFORM_ENV}: {value!r} is not a reference like Organization/x")
    return value


# -- $assign-recipient -----------------------------------------------------------------
def parse_assign_parameters(body: Any) -> tuple[str, str | None]:
    """(recipient reference, note or None) from the operation's Parameters (400 if malformed)."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "$assign-recipient needs a Parameters body with a "
                        "recipient", "Parameters")
    values = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
    recipient = reference_of((values.get("recipient") or {}).get("valueReference"))
    if not recipient:
        raise FhirError(400, "required", "Parameter 'recipient' (valueReference) is required",
                        _RECIPIENT_EXPR)
    note = (values.get("note") or {}).get("valueString")
    if "note" in values and (not isinstance(note, str) or not note.strip()):
        raise FhirError(400, "invalid", "Parameter 'note' must be a non-empty valueString",
                        _NOTE_EXPR)
    return recipient, note.strip() if isinstance(note, str) else None


def _assign_recipient(call: Call, res_type: str | None, res_id: str | None,
                      params: list[tuple[str, str]], body: Any) -> Result:

    platform = platform_organization(call.settings)
    assert platform is not None  # registered only in platform mode
    recipient_ref, note = parse_assign_parameters(body)
    ctx = access_of(call)
    if not (is_privileged(ctx) or represents(ctx, platform)):
        raise FhirError(403, "forbidden", f"Only the coordination platform {platform} may "
                        "assign a recipient")
    now = datetime.now(UTC)
    with call.write() as conn:
        repo = Repository(conn)
        current = repo.read("Task", res_id or "")
        if current is None or current.deleted:
            raise FhirError(404, "not-found", f"Task/{res_id} is not known")
        source = current.resource()
        source_sr = read_ref(repo, reference_of(source.get("focus")))
        if source_sr is None or source_sr.get("resourceType") != "ServiceRequest":
            raise FhirError(422, "business-rule", "The referral's focus ServiceRequest is not "
                            "known", "Task.focus")
        plan_ref, plan_recipient = _recipient(repo, recipient_ref)
        _check_no_open_subtask(conn, repo, source, platform)
        plan = plan_platform_acceptance(
            source, source_sr, ctx, platform_org=platform, recipient_ref=plan_ref,
            recipient=plan_recipient, now=now,
            party_organizations=party_organizations(repo, source))
        sr, sub = plan.service_request, plan.sub_task
        if plan_ref != recipient_ref:  # a PractitionerRole of the planned organization
            sr["performer"] = [{"reference": recipient_ref}]
            sub["owner"] = {"reference": recipient_ref}
        if note:
            sub["note"] = [{"authorReference": {"reference": platform},
                            "time": format_instant(now), "text": note}]
        system = system_call(call)
        stored_sr = crud.create_in(conn, system, "ServiceRequest", sr, res_id=sr["id"])
        stored_sub = crud.create_in(conn, system, "Task", sub, res_id=sub["id"])
        stored_source = crud.store_update(conn, system, "Task", source["id"],
                                          plan.source_task, current.version, "PUT")
    entries = [_entry(call, r.stored) for r in (stored_source, stored_sr, stored_sub)]
    return Result(200, resource={"resourceType": "Bundle", "type": "collection",
                                 "entry": entries})


def _entry(call: Call, stored: StoredResource | None) -> dict:
    assert stored is not None
    resource = stored.resource()
    base = call.base_url.rstrip("/")
    return {"fullUrl": f"{base}/{resource_ref(resource)}", "resource": resource}


def _recipient(repo: Repository, recipient_ref: str) -> tuple[str, dict]:
    """(reference, resource) to plan with: the recipient itself, or for a PractitionerRole
    its Organization (the planner routes to organizations and services)."""

    kind = ref_type(recipient_ref)
    if kind not in RECIPIENT_TYPES or recipient_ref.count("/") != 1:
        raise FhirError(422, "business-rule", f"A recipient must be a relative reference to "
                        f"{', '.join(RECIPIENT_TYPES)}, not {recipient_ref!r}", _RECIPIENT_EXPR)
    recipient = read_ref(repo, recipient_ref)
    if recipient is None:
        raise FhirError(422, "not-found", f"Recipient {recipient_ref} is not known",
                        _RECIPIENT_EXPR)
    if recipient.get("active") is False:
        raise FhirError(422, "business-rule", f"Recipient {recipient_ref} is not active",
                        _RECIPIENT_EXPR)
    if kind != "PractitionerRole":
        return recipient_ref, recipient
    org_ref = reference_of(recipient.get("organization"))
    org = read_ref(repo, org_ref)
    if org_ref is None or org is None:
        raise FhirError(422, "business-rule", f"Recipient {recipient_ref} names no known "
                        "organization (PractitionerRole.organization)", _RECIPIENT_EXPR)
    return org_ref, org


def _check_no_open_subtask(conn: Connection, repo: Repository, source: dict,
                           platform: str) -> None:

    for sub in _sub_tasks(conn, repo, source, platform, read_ref):
        if sub.get("status") in OPEN:
            owner = reference_of(sub.get("owner"))
            raise FhirError(422, "business-rule",
                            f"Task/{source['id']} is already routed to {owner} (Task/{sub['id']} "
                            f"is {sub['status']}); cancel that sub-Task first", "Task.status")


def _sub_tasks(conn: Connection, repo: Repository, source: dict, platform: str,
               read_ref: Any) -> list[dict]:
    """The platform sub-Tasks `partOf` the source Task."""
    return [task for task in repo.search_resources(
        "Task", [("part-of", resource_ref(source))], limit=10_000)
        if is_platform_subtask(task, platform)]


# -- keeping source and sub-Tasks in step ----------------------------------------------
def _after_write(event: WriteEvent) -> None:
    """Reflect sub-Task changes onto the source Task and cancel sub-Tasks with their source."""
    conn, call, new, previous = event.conn, event.call, event.stored, event.previous_stored
    assert new is not None
    platform = platform_organization(call.settings)
    if platform is None or new.res_type != "Task" or new.deleted:
        return
    task = new.resource()
    before = previous.resource() if previous is not None and not previous.deleted else None
    if before is not None and before.get("status") == task.get("status"):
        return
    if is_platform_subtask(task, platform):
        _reflect_up(conn, call, before, task, platform)
    else:
        _cancel_down(conn, call, before, task, platform)


def _reflect_up(conn: Connection, call: Call, before: dict | None, sub: dict,
                platform: str) -> None:

    repo = Repository(conn)
    system = system_call(call)
    platform_sr = read_ref(repo, reference_of(sub.get("focus")))
    for part in sub.get("partOf") or []:
        current = _current(repo, reference_of(part))
        if current is None or current.res_type != "Task":
            continue
        source = current.resource()
        if not same_ref(reference_of(source.get("owner")), platform):
            continue
        procedures = _procedures(conn, repo, platform_sr) if sub.get("status") == "completed" \
            else []
        change = reflect_subtask_change(before, sub, source, now=datetime.now(UTC),
                                        procedures=procedures)
        if change is not None:
            crud.store_update(conn, system, "Task", source["id"], change, current.version, "PUT")
    target = _SR_AFTER_SUBTASK.get(sub.get("status") or "")
    if target and platform_sr is not None and platform_sr.get("status") in ("active", "on-hold") \
            and same_ref(reference_of(platform_sr.get("requester")), platform):
        platform_sr["status"] = target
        _store_if_changed(conn, system, platform_sr)


def _procedures(conn: Connection, repo: Repository, platform_sr: dict | None) -> list[dict]:
    """Completed Procedures the recipient recorded against the platform ServiceRequest."""

    if platform_sr is None:
        return []
    return [procedure for procedure in repo.search_resources(
        "Procedure", [("based-on", resource_ref(platform_sr))])
        if procedure.get("status") == "completed"]


def _cancel_down(conn: Connection, call: Call, before: dict | None, source: dict,
                 platform: str) -> None:

    if source.get("status") not in ("cancelled", "entered-in-error"):
        return
    repo = Repository(conn)
    subs = _sub_tasks(conn, repo, source, platform, read_ref)
    if not subs:
        return
    requests = [sr for sr in (read_ref(repo, reference_of(s.get("focus"))) for s in subs)
                if sr is not None]
    system = system_call(call)
    for change in propagate_source_cancellation(before, source, subs, requests,
                                                now=datetime.now(UTC)):
        _store_if_changed(conn, system, change)


def _store_if_changed(conn: Connection, system: Call, planned: dict) -> None:
    """Store `planned` unless the resource already reached its status meanwhile (a cancelled
    sub-Task revokes its own ServiceRequest before the source's cascade gets to it)."""
    current = _current(Repository(conn), resource_ref(planned))
    if current is None or current.resource().get("status") == planned.get("status"):
        return
    crud.store_update(conn, system, planned["resourceType"], planned["id"], planned,
                      current.version, "PUT")


def _current(repo: Repository, ref: str | None) -> StoredResource | None:
    if not ref or ref.count("/") != 1:
        return None
    res_type, res_id = ref.split("/")
    stored = repo.read(res_type, res_id)
    return stored if stored is not None and not stored.deleted else None
