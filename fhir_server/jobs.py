"""Background jobs of the worker process: the stalled-referral sweep and the Subscription
status hook (the worker's status changes become new versions of the Subscription resource)."""

from __future__ import annotations

import copy
import logging
import time
from datetime import UTC, datetime

from sqlalchemy import Connection

from fhir_server.auth.context import SYSTEM
from fhir_server.config import Settings
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call, Services
from fhir_server.storage.repository import Repository
from fhir_server.storage.search_sql import find_ids
from fhir_server.workflow.stalled import DEFAULT_POLICY, StalledPolicy, activity_points, plan_sweep

log = logging.getLogger("fhir_server.jobs")
OPEN_STATUSES = "requested,accepted,in-progress,on-hold"
REFERRAL_CODE = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"


POLICY_ENV = "FHIR_SERVER_STALLED_POLICY"


def parse_stalled_policy(text: str) -> StalledPolicy:
    """The policy a `FHIR_SERVER_STALLED_POLICY` value describes (empty: the defaults).

    Syntax: comma-separated `key=value` pairs, keys as `StalledPolicy.from_strings` takes them
    (stat, asap, urgent, routine, accepted, in-progress: `<n>h|d|bd`; timezone: an IANA zone;
    holidays: ISO dates, which may themselves be comma-separated). Raises ValueError naming
    the setting on any bad part, so a misconfigured server refuses to start."""
    values: dict[str, str] = {}
    last_key: str | None = None
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if "=" not in part:
            if last_key != "holidays":
                raise ValueError(f"{POLICY_ENV}: {part!r} is not key=value "
                                 "(e.g. stat=1h,urgent=1bd,routine=3bd)")
            values["holidays"] += f",{part}"
            continue
        key, value = (x.strip() for x in part.split("=", 1))
        if key in values:
            raise ValueError(f"{POLICY_ENV}: {key!r} is given twice")
        values[key], last_key = value, key
    try:
        policy = StalledPolicy.from_strings(values)
        policy.tz  # noqa: B018 - an unknown time zone fails here, at startup
    except (ValueError, KeyError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{POLICY_ENV}: {exc}") from None
    return policy


def stalled_policy(settings: Settings) -> StalledPolicy:
    """The configured stalled-referral policy (`Settings.stalled_policy`)."""
    return parse_stalled_policy(settings.stalled_policy) if settings.stalled_policy \
        else DEFAULT_POLICY


def stalled_sweep(services: Services, *, now: datetime | None = None,
                  policy: StalledPolicy | None = None) -> int:
    """Mark (or clear) stalled referral Tasks; returns how many Tasks were updated. Each
    update is an ordinary write, so the referral-stalled topic notifies subscribers.
    `policy` defaults to the configured one (`services.settings.stalled_policy`)."""
    now = now or datetime.now(UTC)
    policy = policy or stalled_policy(services.settings)
    call = Call(services=services, base_url=services.settings.base_url or "", access=SYSTEM,
                prefer_return="minimal")
    with services.db.read() as conn:
        ids = find_ids(conn, "Task", [("code", REFERRAL_CODE), ("status", OPEN_STATUSES)],
                       limit=1_000_000)
        candidates = []
        repo = Repository(conn)
        for task_id in ids:
            page, _c, _t = repo.history(res_type="Task", res_id=task_id, count=10_000)
            versions = [v.resource() for v in reversed(page) if v.body is not None]
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
