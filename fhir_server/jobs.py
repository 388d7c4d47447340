"""Background jobs of the worker process: the stalled-referral sweep and the Subscription
status hook (the worker's status changes become new versions of the Subscription resource)."""

from __future__ import annotations

import copy
import logging
import time
from datetime import UTC, datetime

from fhir_server.auth.context import SYSTEM
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call, Services
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.workflow.stalled import (
    StalledPolicy,
    activity_points,
    plan_sweep,
    stalled_policy,
)

log = logging.getLogger("fhir_server.jobs")
OPEN_STATUSES = "requested,accepted,in-progress,on-hold"
REFERRAL_CODE = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"


def stalled_sweep(services: Services, *, now: datetime | None = None,
                  policy: StalledPolicy | None = None) -> int:
    """Mark (or clear) stalled referral Tasks; returns how many Tasks were updated. Each
    update is an ordinary write, so the referral-stalled topic notifies subscribers.
    `policy` defaults to the configured one (`services.settings.stalled_policy`)."""
    now = now or datetime.now(UTC)
    policy = policy or stalled_policy(services.settings)
    call = Call(services=services, base_url=services.settings.base_url or "", access=SYSTEM,
                prefer_return="minimal")
    with services.db.read() as conn:  # open referral Tasks, then all their versions at once
        repo = Repository(conn)
        tasks = repo.search_resources("Task", [("code", REFERRAL_CODE),
                                               ("status", OPEN_STATUSES)], limit=1_000_000)
        by_id = repo.versions("Task", [task["id"] for task in tasks])
        candidates = []
        for task in tasks:
            versions = [v.resource() for v in by_id.get(task["id"], []) if v.body is not None]
            if versions:
                candidates.append((versions[-1], activity_points(versions)))
    changes = plan_sweep(candidates, now=now, policy=policy)
    for change in changes:
        task = copy.deepcopy(change.task)
        version = int(task["meta"]["versionId"])
        try:
            with services.db.write() as conn:
                crud.store_update(conn, call, "Task", task["id"], task, version, "PUT")
        except Exception:  # a concurrent edit wins; the next sweep re-evaluates
            log.info("stalled sweep: Task/%s changed meanwhile; skipped", task["id"])
    return len(changes)


def subscription_status_hook(conn: Connection, sub_id: str, status: str,
                             error: str | None) -> None:
    """Store the worker's status change (active / error) on the Subscription resource."""
    repo = Repository(conn)
    current = repo.read("Subscription", sub_id)
    if current is None or current.deleted:
        return
    resource = current.resource()
    if resource.get("status") == status and resource.get("error") == error:
        return
    resource["status"] = status
    if error:
        resource["error"] = error[:1000]
    else:
        resource.pop("error", None)
    resource.get("meta", {}).pop("versionId", None)
    repo.update(resource, sub_id, expected_version=current.version, method="PUT")


def audit_retention_sweep(services: Services, *, now: float | None = None) -> int:
    """Remove AuditEvents older than `audit_retention_days` (0 keeps everything)."""
    from fhir_server.auth.audit_store import purge_before

    days = services.settings.audit_retention_days
    if days <= 0:
        return 0
    moment = time.time() if now is None else now
    return purge_before(services.db, int((moment - days * 86400) * 1_000_000))
