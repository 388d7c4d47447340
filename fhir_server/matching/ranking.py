"""Pure matching: hard filters, then a documented score (mappers/DIRECTORY.md "Ranking").

score = 0.30 distance + 0.25 wait + 0.20 capacity + 0.10 language + 0.15 history, each
component in [0, 1]; stale capacity (confirmed more than `stale_days` ago, or never) halves
the wait and capacity components. Ties break on distance, then name, then id, so the same
data always gives the same order.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import date

from fhir_server.matching.geo import Ruler, haversine_km
from fhir_server.matching.pool import Pool, members, one_failure
from mappers.directory_model import LEVEL_CATEGORIES, ServiceFacts

WEIGHTS = {"distance": 0.30, "wait": 0.25, "capacity": 0.20, "language": 0.10, "history": 0.15}
CAPACITY_SCORE = {"capacity": 1.0, "additional-assessment-required": 0.5, "waitlist": 0.3}
UNKNOWN_CAPACITY = 0.2
WAIT_HORIZON_DAYS = 60.0
ACCEPT_HORIZON_HOURS = 168.0
NEUTRAL = 0.5


@dataclass(frozen=True)
class Criteria:
    """What the referral needs. Empty fields do not filter."""

    categories: frozenset[str] = frozenset()
    level: str | None = None
    crisis: bool = False
    crisis_reason: str = ""
    age: float | None = None
    language: str | None = None
    coverage: str | None = None
    modality: str | None = None
    point: tuple[float, float] | None = None
    radius_km: float = 50.0
    count: int = 10
    near_misses: int = 5
    stale_days: int = 30
    today: date = field(default_factory=date.today)

    def relevant_categories(self) -> frozenset[str]:
        """Categories a candidate must have (crisis routing: crisis only)."""
        if self.crisis:
            return frozenset({"crisis"})
        if self.categories and self.level in LEVEL_CATEGORIES:
            both = self.categories & LEVEL_CATEGORIES[self.level]
            return both or self.categories
        if self.categories:
            return self.categories
        return LEVEL_CATEGORIES.get(self.level or "", frozenset())


@dataclass(frozen=True)
class Stats:
    """A provider's history in our data."""

    acceptance_rate: float | None
    median_hours_to_accept: float | None
    referrals: int


@dataclass
class Candidate:
    """One evaluated service."""

    facts: ServiceFacts
    score: float = 0.0
    distance_km: float | None = None
    reasons: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    stale: bool = False

    def sort_key(self) -> tuple:
        dist = self.distance_km if self.distance_km is not None else math.inf
        return (-self.score, dist, self.facts.name, self.facts.service_id)


def evaluate(facts: ServiceFacts, crit: Criteria, stats: Stats | None) -> Candidate | None:
    """Apply the hard filters and score one service; None when it is not relevant at all."""
    if not facts.categories & crit.relevant_categories():
        return None
    cand = Candidate(facts)
    wanted = sorted(facts.categories & crit.relevant_categories())
    cand.reasons.append(f"category: {', '.join(wanted)}")
    _filters(cand, crit)
    if not cand.failed:
        _score(cand, crit, stats)
    return cand


def _filters(cand: Candidate, crit: Criteria) -> None:
    f = cand.facts
    if crit.crisis:
        if f.always_open:
            cand.reasons.append(f"crisis routing ({crit.crisis_reason}): open 24/7")
        else:
            cand.failed.append("crisis-24-7: not available 24/7")
    if not f.active:
        cand.failed.append("active: service is inactive")
    if f.capacity == "no-capacity":
        cand.failed.append("capacity: no capacity")
    if crit.age is not None:
        if (f.age_min is not None and crit.age < f.age_min) or (
                f.age_max is not None and crit.age > f.age_max):
            cand.failed.append(f"age: {crit.age:g} outside {_age_text(f)}")
        else:
            cand.reasons.append(f"age: {crit.age:g} within {_age_text(f)}")
    if crit.language:
        if crit.language in f.languages:
            cand.reasons.append(f"language: speaks {crit.language}")
        elif "interpreter" in f.modalities:
            cand.reasons.append(f"language: {crit.language} via interpreter")
        else:
            cand.failed.append(f"language: {crit.language} not offered")
    if crit.coverage:
        if crit.coverage in f.coverage:
            cand.reasons.append(f"coverage: accepts {crit.coverage}")
        else:
            cand.failed.append(f"coverage: {crit.coverage} not accepted")
    if crit.modality:
        if crit.modality in f.modalities:
            cand.reasons.append(f"modality: {crit.modality}")
        else:
            cand.failed.append(f"modality: {crit.modality} not offered")
    _distance(cand, crit)


def _distance(cand: Candidate, crit: Criteria) -> None:
    f = cand.facts
    if crit.point is None:
        return
    if f.positions:
        cand.distance_km = round(min(haversine_km(crit.point, p) for p in f.positions), 2)
    if crit.modality == "telehealth":
        cand.reasons.append("distance: not applied (telehealth)")
    elif cand.distance_km is None:
        cand.failed.append("distance: service has no location coordinates")
    elif cand.distance_km > crit.radius_km:
        cand.failed.append(f"distance: {cand.distance_km:g} km > {crit.radius_km:g} km")
    else:
        cand.reasons.append(f"distance: {cand.distance_km:g} km")


def _age_text(f: ServiceFacts) -> str:
    low = f"{f.age_min:g}" if f.age_min is not None else "0"
    high = f"{f.age_max:g}" if f.age_max is not None else "any"
    return f"ages {low}-{high}"


def _numbers(f: ServiceFacts, crit: Criteria, distance_km: float | None,
             stats: Stats | None) -> tuple[float, int | None, bool]:
    """(score, days since capacity was confirmed, stale) -- the one scoring formula."""
    if crit.point is not None and distance_km is not None and crit.modality != "telehealth":
        distance = max(0.0, 1 - distance_km / max(crit.radius_km, 0.001))
    else:
        distance = NEUTRAL
    wait = max(0.0, 1 - f.wait_days / WAIT_HORIZON_DAYS) if f.wait_days is not None else NEUTRAL
    capacity = CAPACITY_SCORE.get(f.capacity or "", UNKNOWN_CAPACITY)
    language = 1.0 if not crit.language or crit.language in f.languages else 0.5
    age = (crit.today - f.confirmed).days if f.confirmed else None
    stale = age is None or age > crit.stale_days
    if stale:
        wait, capacity = wait / 2, capacity / 2
    score = (WEIGHTS["distance"] * distance + WEIGHTS["wait"] * wait
             + WEIGHTS["capacity"] * capacity + WEIGHTS["language"] * language
             + WEIGHTS["history"] * _history(stats))
    return round(score, 4), age, stale


def _score(cand: Candidate, crit: Criteria, stats: Stats | None) -> None:
    f = cand.facts
    cand.score, age, cand.stale = _numbers(f, crit, cand.distance_km, stats)
    if cand.stale:
        cand.reasons.append("stale capacity: " + (f"confirmed {age} days ago" if age is not None
                                                  else "never confirmed") + " (rank lowered)")
    else:
        cand.reasons.append(f"capacity confirmed {age} days ago")
    cand.reasons.append(f"capacity: {f.capacity or 'unknown'}"
                        + (f" ({f.capacity_notes})" if f.capacity_notes else ""))
    cand.reasons.append(f"wait: {f.wait_days} days" if f.wait_days is not None
                        else "wait: unknown")
    if stats is not None and stats.referrals:
        rate = "n/a" if stats.acceptance_rate is None else f"{stats.acceptance_rate:.0%}"
        med = ("n/a" if stats.median_hours_to_accept is None
               else f"{stats.median_hours_to_accept:g} h")
        cand.reasons.append(f"history: {stats.referrals} referrals, acceptance {rate}, "
                            f"median time to accept {med}")


def _history(stats: Stats | None) -> float:
    if stats is None or not stats.referrals:
        return NEUTRAL
    rate = stats.acceptance_rate if stats.acceptance_rate is not None else NEUTRAL
    speed = (max(0.0, 1 - stats.median_hours_to_accept / ACCEPT_HORIZON_HOURS)
             if stats.median_hours_to_accept is not None else NEUTRAL)
    return 0.5 * rate + 0.5 * speed


def _masks(pool: Pool, crit: Criteria) -> list[int]:
    """One pass-bitset per applicable hard filter except distance (mirrors `_filters`)."""
    masks = [pool.mask(("active",), lambda f: f.active),
             pool.mask(("capacity",), lambda f: f.capacity != "no-capacity")]
    if crit.crisis:
        masks.append(pool.mask(("24/7",), lambda f: f.always_open))
    age, language, coverage, modality = crit.age, crit.language, crit.coverage, crit.modality
    if age is not None:
        masks.append(pool.mask(("age", age), lambda f: not (
            (f.age_min is not None and age < f.age_min)
            or (f.age_max is not None and age > f.age_max))))
    if language:
        masks.append(pool.mask(("language", language), lambda f: language in f.languages
                               or "interpreter" in f.modalities))
    if coverage:
        masks.append(pool.mask(("coverage", coverage), lambda f: coverage in f.coverage))
    if modality:
        masks.append(pool.mask(("modality", modality), lambda f: modality in f.modalities))
    return masks


def rank(services: Pool | list[ServiceFacts], crit: Criteria, stats: dict[str, Stats]
         ) -> tuple[list[Candidate], int, list[Candidate]]:
    """(the best `count` matches, best first, with reasons; how many matched in all; near
    misses -- active services that failed exactly one criterion -- nearest first, up to
    `near_misses`). `services` is a `Pool` of the relevant categories (or any list)."""
    if not isinstance(services, Pool):
        relevant = crit.relevant_categories()
        services = Pool([f for f in services if f.categories & relevant])
    pool, point, radius = services, crit.point, crit.radius_km
    passing, once = one_failure(_masks(pool, crit), pool.everything)
    once &= pool.mask(("active",), lambda f: f.active)
    facts = pool.services
    scored: list[tuple] = []
    missed: list[tuple] = []

    ruler = Ruler(point, radius) if point is not None else None
    prepared = pool.prepared

    def distance(i: int) -> float | None:
        return ruler.nearest(prepared[i]) if ruler is not None and prepared[i] else None

    def score(i: int, dist: float | None) -> None:
        f = facts[i]
        st = stats.get(f.service_id) or stats.get(f.organization or "")
        far = dist if dist is not None else math.inf
        scored.append((-_numbers(f, crit, dist, st)[0], far, f.name, f.service_id, f))

    def miss(i: int, dist: float | None) -> None:
        f = facts[i]
        missed.append((dist if dist is not None else math.inf, f.name, f.service_id, f))

    if point is None or crit.modality == "telehealth":
        for i in members(passing):
            score(i, distance(i))
        for i in members(once):
            miss(i, distance(i))
    else:
        near = pool.near(point, radius * 1.02 + 1)
        inside = 0
        for i in members(passing & near):
            dist = distance(i)
            if dist is not None and dist <= radius:
                score(i, dist)
            else:
                miss(i, dist)
        for i in members(once & near):
            dist = distance(i)
            if dist is not None and dist <= radius:
                miss(i, dist)
                inside += 1
        if inside < crit.near_misses:  # misses beyond the radius can still make the list
            for i in members(passing & ~near):
                miss(i, distance(i))
    matches = [_explain(t[-1], crit, stats)
               for t in heapq.nsmallest(crit.count, scored, key=lambda t: t[:4])]
    misses = [_explain(t[-1], crit, stats)
              for t in heapq.nsmallest(crit.near_misses, missed, key=lambda t: t[:3])]
    return matches, len(scored), misses


def _explain(f: ServiceFacts, crit: Criteria, stats: dict[str, Stats]) -> Candidate:
    cand = evaluate(f, crit, stats.get(f.service_id) or stats.get(f.organization or ""))
    assert cand is not None
    return cand
