"""Candidate loading for $match: the whole directory as `ServiceFacts`, cached per database.

The cache is keyed on a fingerprint of the HealthcareService and Location rows (count, newest
lastUpdated, sum of versions). Writes through this process drop the cache at once (the
directory feature's after-write hook calls `invalidate`); writes by other processes are seen
once the fingerprint is re-checked, at most RECHECK_SECONDS later. Provider history (Task
acceptance) is cached the same way on Task.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import orjson
from sqlalchemy import Connection, func, select

from fhir_server.matching.ranking import Stats
from fhir_server.storage.schema import history, resources
from fhir_server.workflow.metrics import task_facts
from fhir_server.workflow.timeline import ordered_versions
from mappers.directory_model import ServiceFacts, location_position, service_facts

_DIRECTORY_TYPES = ("HealthcareService", "Location")
RECHECK_SECONDS = 1.0


@dataclass
class Snapshot:
    """The directory at one fingerprint: facts by category for quick filtering."""

    fingerprint: tuple
    services: list[ServiceFacts]
    by_category: dict[str, list[ServiceFacts]]
    pools: dict[frozenset[str], list[ServiceFacts]] = field(default_factory=dict)

    def for_categories(self, categories: frozenset[str]) -> list[ServiceFacts]:
        """Services in any of `categories`, each once, in a stable order (memoised)."""
        if categories in self.pools:
            return self.pools[categories]
        seen: dict[str, ServiceFacts] = {}
        for cat in sorted(categories):
            for facts in self.by_category.get(cat, []):
                seen.setdefault(facts.service_id, facts)
        self.pools[categories] = list(seen.values())
        return self.pools[categories]


_lock = threading.Lock()
_directory: dict[str, Snapshot] = {}
_stats: dict[str, tuple[tuple, dict[str, Stats]]] = {}
_checked: dict[tuple[str, str], float] = {}


def invalidate(res_type: str) -> None:
    """Forget cached state that depends on `res_type` (called after every local write)."""
    with _lock:
        if res_type in _DIRECTORY_TYPES:
            _directory.clear()
        elif res_type == "Task":
            _stats.clear()


def _fresh(kind: str, key: str, cached: object) -> bool:
    """True when `cached` exists and was checked against the database recently."""
    return cached is not None and time.monotonic() - _checked.get((kind, key), 0.0) \
        < RECHECK_SECONDS


def _mark(kind: str, key: str) -> None:
    _checked[(kind, key)] = time.monotonic()


def _fingerprint(conn: Connection, types: tuple[str, ...]) -> tuple:
    row = conn.execute(select(func.count(), func.max(resources.c.last_updated),
                              func.sum(resources.c.version))
                       .where(resources.c.res_type.in_(types))).one()
    return tuple(row)


def _bodies(conn: Connection, res_type: str) -> list[dict]:
    rows = conn.execute(select(resources.c.body).where(
        resources.c.res_type == res_type, resources.c.deleted.is_(False)))
    return [orjson.loads(r[0]) for r in rows if r[0]]


def directory(conn: Connection, key: str) -> Snapshot:
    """The current directory snapshot (rebuilt when the fingerprint changed)."""
    cached = _directory.get(key)
    if _fresh("directory", key, cached):
        return cached  # type: ignore[return-value]
    fp = _fingerprint(conn, _DIRECTORY_TYPES)
    if cached is not None and cached.fingerprint == fp:
        _mark("directory", key)
        return cached
    positions: dict[str, tuple[float, float]] = {}
    for loc in _bodies(conn, "Location"):
        pos = location_position(loc)
        if pos is not None and loc.get("status") != "inactive":
            positions[loc["id"]] = pos
    services = []
    by_category: dict[str, list[ServiceFacts]] = defaultdict(list)
    for body in _bodies(conn, "HealthcareService"):
        facts = service_facts(body, tuple(positions[lid] for lid in _location_ids(body)
                                          if lid in positions))
        services.append(facts)
    services.sort(key=lambda f: f.service_id)
    for facts in services:
        for cat in facts.categories:
            by_category[cat].append(facts)
    snap = Snapshot(fp, services, dict(by_category))
    with _lock:
        _directory[key] = snap
    _mark("directory", key)
    return snap


def _location_ids(body: dict) -> list[str]:
    return [str(r.get("reference", ""))[len("Location/"):] for r in body.get("location") or []
            if str(r.get("reference", "")).startswith("Location/")]


def provider_stats(conn: Connection, key: str) -> dict[str, Stats]:
    """Acceptance rate and median hours to accept per Task.owner reference (our history)."""
    cached = _stats.get(key)
    if _fresh("stats", key, cached):
        return cached[1]  # type: ignore[index]
    fp = _fingerprint(conn, ("Task",))
    if cached is not None and cached[0] == fp:
        _mark("stats", key)
        return cached[1]
    versions: dict[str, list[dict | None]] = defaultdict(list)
    rows = conn.execute(select(history.c.res_id, history.c.body).where(
        history.c.res_type == "Task"))
    for res_id, body in rows:
        versions[res_id].append(orjson.loads(body) if body else None)
    per_owner: dict[str, list] = defaultdict(list)
    for task_versions in versions.values():
        ordered = ordered_versions(task_versions)
        facts = task_facts(ordered)
        owner = ((ordered[-1] or {}).get("owner") or {}).get("reference") if ordered else None
        if facts is not None and owner:
            per_owner[owner].append(facts)
    out = {owner: _summarise(facts) for owner, facts in per_owner.items()}
    with _lock:
        _stats[key] = (fp, out)
    _mark("stats", key)
    return out


def _summarise(facts: list) -> Stats:
    accepted = [f for f in facts if f.accepted_at is not None]
    rejected = [f for f in facts if f.status == "rejected" and f.accepted_at is None]
    decided = len(accepted) + len(rejected)
    hours = [(f.accepted_at - f.referred_at).total_seconds() / 3600 for f in accepted
             if f.referred_at is not None]
    return Stats(acceptance_rate=round(len(accepted) / decided, 4) if decided else None,
                 median_hours_to_accept=round(statistics.median(hours), 2) if hours else None,
                 referrals=len(facts))
