"""Candidate loading for $match: the whole directory as `ServiceFacts`, cached per database.

The cache is keyed on a fingerprint of the HealthcareService and Location rows (count, newest
lastUpdated, checksum of lastUpdated). Writes through this process drop the cache at once (the
directory feature's after-write hook calls `invalidate`); writes by other processes are seen
once the fingerprint is re-checked, at most RECHECK_SECONDS later. Provider history (Task
acceptance) is cached the same way on Task.
"""

from __future__ import annotations

import dataclasses
import statistics
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from fhir_server.matching.pool import Pool
from fhir_server.matching.ranking import Stats
from fhir_server.storage.db import Connection
from fhir_server.storage.outcomes_store import owner_acceptance
from fhir_server.storage.repository import Repository
from mappers.directory_model import ServiceFacts, location_position, service_facts

_DIRECTORY_TYPES = ("HealthcareService", "Location")
RECHECK_SECONDS = 1.0


@dataclass
class Snapshot:
    """The directory at one fingerprint: facts by category for quick filtering."""

    fingerprint: tuple
    services: list[ServiceFacts]
    by_category: dict[str, list[ServiceFacts]]
    pools: dict[frozenset[str], Pool] = field(default_factory=dict)

    def for_categories(self, categories: frozenset[str]) -> Pool:
        """The pool of services in any of `categories`, each once, in a stable order, with
        its filter and position indexes (memoised)."""
        found = self.pools.get(categories)
        if found is not None:
            return found
        seen: dict[str, ServiceFacts] = {}
        for cat in sorted(categories):
            for facts in self.by_category.get(cat, []):
                seen.setdefault(facts.service_id, facts)
        pool = Pool(list(seen.values()))
        with _lock:
            return self.pools.setdefault(categories, pool)


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
    """Changes with any write to `types` (see Repository.fingerprint)."""
    return Repository(conn).fingerprint(types)


@dataclass
class _Parsed:
    """What was parsed from the rows of one database, by id: ((version, lastUpdated), value).
    A rebuild re-reads only the rows whose version or lastUpdated changed."""

    locations: dict[str, tuple[tuple, tuple[float, float] | None]] = field(default_factory=dict)
    services: dict[str, tuple[tuple, ServiceFacts]] = field(default_factory=dict)


_parsed: dict[str, _Parsed] = {}
_build_lock = threading.Lock()
_KEEP_DATABASES = 8


def _refresh(conn: Connection, res_type: str, memo: dict[str, tuple[tuple, Any]],
             convert: Callable[[dict], Any]) -> None:
    """Bring `memo` up to date with the live rows of `res_type`: parse new and changed
    bodies (one pass over all bodies when most changed), forget deleted ones."""
    repo = Repository(conn)
    live = repo.live_tags(res_type)
    for rid in [rid for rid in memo if rid not in live]:
        del memo[rid]
    changed = [rid for rid, tag in live.items() if rid not in memo or memo[rid][0] != tag]
    if not changed:
        return
    wanted = None if len(changed) > len(live) // 2 else changed  # most changed: read all
    for rid, version, stamp, body in repo.live_bodies(res_type, wanted):
        if rid not in memo or memo[rid][0] != (version, stamp):
            memo[rid] = ((version, stamp), convert(orjson.loads(body)))


def _position(location: dict) -> tuple[float, float] | None:
    return None if location.get("status") == "inactive" else location_position(location)


def directory(conn: Connection, key: str) -> Snapshot:
    """The current directory snapshot (rebuilt when the fingerprint changed; only changed
    rows are parsed again)."""
    cached = _directory.get(key)
    if _fresh("directory", key, cached):
        return cached  # type: ignore[return-value]
    fp = _fingerprint(conn, _DIRECTORY_TYPES)
    if cached is not None and cached.fingerprint == fp:
        _mark("directory", key)
        return cached
    with _build_lock:
        parsed = _parsed[key] = _parsed.pop(key, None) or _Parsed()
        while len(_parsed) > _KEEP_DATABASES:
            del _parsed[next(iter(_parsed))]
        _refresh(conn, "Location", parsed.locations, _position)
        _refresh(conn, "HealthcareService", parsed.services, service_facts)
        positions = {lid: pos for lid, (_, pos) in parsed.locations.items() if pos is not None}
        services = []
        for rid, (tag, facts) in parsed.services.items():
            wanted = tuple(positions[lid] for lid in facts.location_ids if lid in positions)
            if wanted != facts.positions:
                facts = dataclasses.replace(facts, positions=wanted)
                parsed.services[rid] = (tag, facts)
            services.append(facts)
    services.sort(key=lambda f: f.service_id)
    by_category: dict[str, list[ServiceFacts]] = defaultdict(list)
    for facts in services:
        for cat in facts.categories:
            by_category[cat].append(facts)
    snap = Snapshot(fp, services, dict(by_category))
    with _lock:
        _directory[key] = snap
    _mark("directory", key)
    return snap


def provider_stats(conn: Connection, key: str) -> dict[str, Stats]:
    """Acceptance rate and median hours to accept per Task.owner reference (our history)."""
    cached = _stats.get(key)
    if _fresh("stats", key, cached):
        return cached[1]  # type: ignore[index]
    fp = _fingerprint(conn, ("Task",))
    if cached is not None and cached[0] == fp:
        _mark("stats", key)
        return cached[1]
    per_owner: dict[str, list[tuple]] = defaultdict(list)
    for owner, status, redirected, referred_at, accepted_at in owner_acceptance(conn):
        per_owner[owner].append((status, redirected, referred_at, accepted_at))
    out = {owner: _summarise(facts) for owner, facts in per_owner.items()}
    with _lock:
        _stats[key] = (fp, out)
    _mark("stats", key)
    return out


def _summarise(facts: list[tuple]) -> Stats:
    """Acceptance rate (redirects are not rejections) and median hours to accept of one
    owner's referrals, given as (status, redirected, referred_at, accepted_at)."""
    accepted = [(referred, at) for _s, _r, referred, at in facts if at is not None]
    rejected = sum(1 for status, redirected, _f, at in facts
                   if status == "rejected" and not redirected and at is None)
    decided = len(accepted) + rejected
    hours = [max(at - referred, 0) / 3_600_000_000 for referred, at in accepted]
    return Stats(acceptance_rate=round(len(accepted) / decided, 4) if decided else None,
                 median_hours_to_accept=round(statistics.median(hours), 2) if hours else None,
                 referrals=len(facts))
