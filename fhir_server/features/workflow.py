"""The referral workflow wired into every write path, plus $redirect and $timeline (rules
in fhir_server/workflow/RULES.md). Coordination-platform mode is its own feature
(`features.coordination`: $assign-recipient); `$referral-metrics` lives in
`features.outcomes`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.features.common import (
    access_of,
    party_organizations,
    read_ref,
    ref_of,
)
from fhir_server.interactions import crud
from fhir_server.interactions.caller_view import system_call
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.json_tree import copy_tree
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository, StoredResource
from fhir_server.workflow import artifacts, redirect, task_rules, timeline
from fhir_server.workflow.canonical import CANONICAL_BASE
from fhir_server.workflow.stalled import stalled_policy
from fhir_server.workflow.write_path import prepare_service_request_write, prepare_task_write

OPERATION_BASE = f"{CANONICAL_BASE}/OperationDefinition"
_FOLLOW_UPS = "workflow.follow-up-tasks"  # WriteEvent.carried: Tasks to store after the write


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the workflow hooks, operations and published definitions."""
    services.phases.add("prepare", "workflow.referral-rules", _before_write, order=100,
                        types={"Task", "ServiceRequest"})
    services.phases.add("after-write", "workflow.follow-up-tasks", _after_write, order=200,
                        types={"ServiceRequest"})
    registry.register(Operation(
        name="redirect", handler=_redirect, types=frozenset({"Task"}), instance_level=True,
        methods=frozenset({"POST"}), definition=f"{OPERATION_BASE}/Task-redirect",
        documentation="Reject this referral Task and create the next one for a new owner",
        affects_state=True))
    registry.register(Operation(
        name="timeline", handler=_timeline, types=frozenset({"Task"}), instance_level=True,
        methods=frozenset({"GET", "POST"}), reads="query",
        definition=f"{OPERATION_BASE}/Task-timeline",
        documentation="Ordered status changes of a referral Task, with who and when"))
    services.seed_providers.append(artifacts.code_systems)
    stalled_policy(services.settings)  # a malformed FHIR_SERVER_STALLED_POLICY stops the start


def _output_targets(repo: Repository, task: dict) -> dict[str, dict]:
    targets: dict[str, dict] = {}
    for output in task.get("output") or []:
        ref = ref_of(output.get("valueReference"))
        resource = read_ref(repo, ref)
        if ref and resource is not None:
            targets[ref] = resource
            for based in resource.get("basedOn") or []:  # platform filler-orders
                based_ref = ref_of(based)
                based_res = read_ref(repo, based_ref)
                if based_ref and based_res is not None:
                    targets[based_ref] = based_res
    return targets


def _before_write(event: WriteEvent) -> dict | None:
    """The referral rules of a Task or ServiceRequest write; the content they store."""
    if event.res_type == "Task":
        return _task_write(event)
    if event.resource is not None:  # a ServiceRequest
        return _service_request_write(event)
    return None


def _task_write(event: WriteEvent) -> dict | None:
    conn, call, interaction = event.conn, event.call, event.interaction
    previous, new = event.previous, event.resource
    ctx = access_of(call)
    repo = Repository(conn)
    if interaction == "delete":
        task_rules.check_task_delete(previous, ctx,  # type: ignore[arg-type]
                                     party_organizations=party_organizations(repo, previous))
        return None
    assert new is not None
    if not (task_rules.is_referral_task(new) or task_rules.is_referral_task(previous)):
        return None
    if previous is not None and not ctx.is_system:
        version = event.if_match
        task_rules.check_task_version(
            previous.get("meta", {}).get("versionId"),
            f'W/"{version}"' if version is not None else None,
            required=call.settings.require_if_match_for_tasks)
    stored = prepare_task_write(
        previous, new, ctx,
        focus_service_request=read_ref(repo, ref_of(new.get("focus"))),
        output_targets=_output_targets(repo, new),
        party_organizations=party_organizations(repo, previous, new))
    return stored


def _service_request_write(event: WriteEvent) -> dict:
    conn, call, previous, new = event.conn, event.call, event.previous, event.resource
    assert new is not None
    ctx = access_of(call)
    repo = Repository(conn)
    open_tasks: list[dict] = []
    if previous is not None:
        open_tasks = repo.search_resources(
            "Task", [("focus", f"ServiceRequest/{new['id']}")], limit=100_000)
    stored, follow_ups = prepare_service_request_write(
        previous, new, ctx, open_tasks=open_tasks, now=datetime.now(UTC),
        party_organizations=party_organizations(repo, previous, new))
    event.carried[_FOLLOW_UPS] = follow_ups
    return stored


def _after_write(event: WriteEvent) -> None:
    """Store the Tasks a ServiceRequest change made follow (already checked by the rules)."""
    follow_ups = event.carried.pop(_FOLLOW_UPS, None)
    if not follow_ups:
        return
    conn, call = event.conn, event.call
    system = system_call(call)
    for task in follow_ups:
        crud.store_update(conn, system, "Task", task["id"], copy_tree(task), None, "PUT")


# -- operations ------------------------------------------------------------------------
def _redirect(call: Call, res_type: str | None, res_id: str | None,
              params: list[tuple[str, str]], body: Any) -> Result:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "$redirect needs a Parameters body with target and "
                        "reason", "Parameters")
    target_ref, reason = redirect.parse_redirect_parameters(body)
    ctx = access_of(call)
    with call.write() as conn:
        repo = Repository(conn)
        current = repo.read("Task", res_id or "")
        if current is None or current.deleted:
            raise FhirError(404, "not-found", f"Task/{res_id} is not known")
        task = current.resource()
        if call.if_match_version is not None:  # the page that asked saw this version
            task_rules.check_task_version(task.get("meta", {}).get("versionId"),
                                          f'W/"{call.if_match_version}"')
        target = read_ref(repo, target_ref)
        rejected, successor = redirect.plan_redirect(
            task, target_ref, reason, ctx, now=datetime.now(UTC), target=target,
            party_organizations=party_organizations(repo, task))
        system = system_call(call)
        new_result = crud.create_in(conn, system, "Task", successor,
                                    res_id=successor.get("id"))
        crud.store_update(conn, system, "Task", rejected["id"], rejected, current.version,
                          "PUT")
    return Result(201, stored=new_result.stored, location=True)


def _timeline(call: Call, res_type: str | None, res_id: str | None,
              params: list[tuple[str, str]], body: Any) -> Result:
    with call.db.read() as conn:
        versions = _versions(conn, "Task", res_id or "")
    if not versions:
        raise FhirError(404, "not-found", f"Task/{res_id} is not known")
    return Result(200, resource=timeline.build_timeline(versions))


def _versions(conn: Connection, res_type: str, res_id: str) -> list[dict | None]:
    return _newest_first(Repository(conn).versions(res_type, [res_id]).get(res_id, []))


def _newest_first(versions: list[StoredResource]) -> list[dict | None]:
    """Version bodies newest first (None for a deletion), as $timeline and metrics take them."""
    return [v.resource() if v.body is not None else None for v in reversed(versions)]
