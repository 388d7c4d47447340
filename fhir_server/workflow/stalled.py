"""Stalled-referral detection, deterministic with an injected clock (`now`).

A referral Task is stalled when it
  * is `requested` and not accepted within the acceptance deadline of its priority
    (defaults: stat 1 hour, asap 4 hours, urgent 1 business day, routine 3 business days);
  * is `accepted` and not started (in-progress) within 7 days;
  * is `in-progress` without any update for 14 days.
The mark lives in `Task.businessStatus` as a coding from our CodeSystem
(`codesystems/referral-business-status.json`); other businessStatus codings are kept.
The periodic job (`plan_sweep`) returns the Tasks to update and an event for each change.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from fhir_server.config import Settings
from fhir_server.workflow.canonical import STALLED_SYSTEM
from fhir_server.workflow.refs import resource_ref
from fhir_server.workflow.times import add_business_days, format_instant, parse_instant

StatusPoint = tuple[str, datetime]
"""(Task.status, time of the version) for one stored version that counts as activity."""

CODES = {
    "stalled-not-accepted": "Stalled: not accepted in time",
    "stalled-not-started": "Stalled: accepted but not started in time",
    "stalled-no-progress": "Stalled: in progress without update",
}
_DEADLINE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(h|d|bd)\s*$")


@dataclass(frozen=True)
class Deadline:
    """A duration in clock `hours`, calendar `days` or `business_days` (Mon-Fri)."""

    amount: float
    unit: str = "hours"

    @classmethod
    def parse(cls, text: str) -> Deadline:
        """"1h", "7d" or "3bd"."""
        match = _DEADLINE.match(text)
        if not match:
            raise ValueError(f"Bad deadline {text!r}: use e.g. 1h, 7d or 3bd")
        units = {"h": "hours", "d": "days", "bd": "business_days"}
        return cls(float(match.group(1)), units[match.group(2)])

    def due(self, start: datetime, policy: StalledPolicy) -> datetime:
        """When a clock started at `start` runs out."""
        if self.unit == "hours":
            return start + timedelta(hours=self.amount)
        if self.unit == "days":
            return start + timedelta(days=self.amount)
        return add_business_days(start, int(self.amount), policy.tz, policy.holidays)


def _default_acceptance() -> dict[str, Deadline]:
    return {"stat": Deadline(1, "hours"), "asap": Deadline(4, "hours"),
            "urgent": Deadline(1, "business_days"), "routine": Deadline(3, "business_days")}


@dataclass(frozen=True)
class StalledPolicy:
    """Deadlines per state; acceptance deadlines per Task.priority (missing = routine)."""

    acceptance: Mapping[str, Deadline] = field(default_factory=_default_acceptance)
    start_within: Deadline = Deadline(7, "days")
    progress_within: Deadline = Deadline(14, "days")
    holidays: frozenset[date] = frozenset()
    timezone: str = "UTC"

    @property
    def tz(self):
        """The zone business days are counted in."""
        return UTC if self.timezone == "UTC" else ZoneInfo(self.timezone)

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> StalledPolicy:
        """From settings such as {"stat": "1h", "urgent": "1bd", "accepted": "7d",
        "in-progress": "14d", "timezone": "America/New_York", "holidays": "2026-12-25,..."}."""
        acceptance = _default_acceptance()
        kwargs: dict = {}
        for key, raw in values.items():
            if key in ("stat", "asap", "urgent", "routine"):
                acceptance[key] = Deadline.parse(raw)
            elif key == "accepted":
                kwargs["start_within"] = Deadline.parse(raw)
            elif key == "in-progress":
                kwargs["progress_within"] = Deadline.parse(raw)
            elif key == "timezone":
                kwargs["timezone"] = raw
            elif key == "holidays":
                kwargs["holidays"] = frozenset(
                    date.fromisoformat(d.strip()) for d in raw.split(",") if d.strip())
            else:
                raise ValueError(f"Unknown stalled-policy setting {key!r}")
        return cls(acceptance=acceptance, **kwargs)


DEFAULT_POLICY = StalledPolicy()


@dataclass(frozen=True)
class StalledVerdict:
    """Outcome of `evaluate_stalled`: `code` is the mark the Task should carry (or None)."""

    stalled: bool
    code: str | None
    status: str | None
    since: datetime | None
    due: datetime | None


def evaluate_stalled(
    task: dict,
    history_status_times: Sequence[StatusPoint],
    *,
    now: datetime,
    policy: StalledPolicy = DEFAULT_POLICY,
) -> StalledVerdict:
    """Is `task` stalled at `now`? `history_status_times` are its activity points, oldest first
    (see `activity_points`); without them, lastModified/authoredOn stand in."""
    status = task.get("status")
    points = list(history_status_times) or _fallback_points(task)
    since, last = _current_run(points, status)
    if status == "requested":
        deadline = policy.acceptance.get(task.get("priority") or "routine",
                                         policy.acceptance.get("routine"))
        code, start = "stalled-not-accepted", since
    elif status == "accepted":
        deadline, code, start = policy.start_within, "stalled-not-started", since
    elif status == "in-progress":
        deadline, code, start = policy.progress_within, "stalled-no-progress", last
    else:
        return StalledVerdict(False, None, status, since, None)
    if start is None or deadline is None:
        return StalledVerdict(False, None, status, since, None)
    due = deadline.due(start, policy)
    stalled = now >= due
    return StalledVerdict(stalled, code if stalled else None, status, since, due)


def _fallback_points(task: dict) -> list[StatusPoint]:
    when = parse_instant(task.get("lastModified")) or parse_instant(task.get("authoredOn"))
    return [(task.get("status"), when)] if when else []


def _current_run(points: Sequence[StatusPoint], status: str | None):
    """(start of the latest run of `status`, latest point in that run)."""
    since = last = None
    for point_status, at in reversed(points):
        if point_status != status:
            break
        since = at
        last = last or at
    return since, last


def activity_points(versions: Iterable[dict]) -> list[StatusPoint]:
    """Activity points from history versions (oldest first), skipping versions that only
    changed the stalled mark, meta or narrative (the sweep's own writes are no activity)."""
    points: list[StatusPoint] = []
    previous: dict | None = None
    for version in versions:
        at = parse_instant((version.get("meta") or {}).get("lastUpdated"))
        if at is None:
            continue
        if previous is None or _strip(previous) != _strip(version):
            points.append((version.get("status"), at))
        previous = version
    return points


def _strip(task: dict) -> dict:
    return clear_stalled({k: v for k, v in task.items() if k not in ("meta", "text")})


def current_mark(task: dict) -> str | None:
    """The stalled code the Task carries, if any."""
    for coding in (task.get("businessStatus") or {}).get("coding") or []:
        if coding.get("system") == STALLED_SYSTEM:
            return coding.get("code")
    return None


def mark_stalled(task: dict, code: str = "stalled-not-accepted") -> dict:
    """A copy of `task` whose businessStatus carries the stalled `code` (replacing any other)."""
    if code not in CODES:
        raise ValueError(f"Unknown stalled code {code!r}")
    out = clear_stalled(task)
    concept = copy.deepcopy(out.get("businessStatus") or {})
    concept.setdefault("coding", []).append(
        {"system": STALLED_SYSTEM, "code": code, "display": CODES[code]})
    concept.setdefault("text", CODES[code])
    out["businessStatus"] = concept
    return out


def clear_stalled(task: dict) -> dict:
    """A copy of `task` without our stalled coding (businessStatus dropped if nothing is left)."""
    out = copy.deepcopy(task)
    concept = out.get("businessStatus")
    if not isinstance(concept, dict):
        return out
    codings = concept.get("coding") or []
    ours = [c for c in codings if c.get("system") == STALLED_SYSTEM]
    if not ours:
        return out
    kept = [c for c in codings if c.get("system") != STALLED_SYSTEM]
    if kept:
        concept["coding"] = kept
    else:
        concept.pop("coding", None)
    if concept.get("text") in CODES.values():
        concept.pop("text")
    if concept:
        out["businessStatus"] = concept
    else:
        out.pop("businessStatus")
    return out


def clear_on_move(previous: dict | None, new: dict) -> dict:
    """For every write path: when the status changes, the stalled mark goes."""
    if previous is not None and previous.get("status") != new.get("status") and current_mark(new):
        return clear_stalled(new)
    return new


@dataclass(frozen=True)
class StalledChange:
    """One update the sweep wants stored, and the event to hand to subscriptions."""

    task: dict
    event: dict


def plan_sweep(
    tasks: Iterable[tuple[dict, Sequence[StatusPoint]]],
    *,
    now: datetime,
    policy: StalledPolicy = DEFAULT_POLICY,
) -> list[StalledChange]:
    """The periodic job's pure part: Tasks whose mark must be set, changed or cleared."""
    changes = []
    for task, points in tasks:
        verdict = evaluate_stalled(task, points, now=now, policy=policy)
        mark = current_mark(task)
        if verdict.code == mark:
            continue
        updated = mark_stalled(task, verdict.code) if verdict.code else clear_stalled(task)
        changes.append(StalledChange(updated, _event(task, verdict, now)))
    return changes


def _event(task: dict, verdict: StalledVerdict, now: datetime) -> dict:
    event = {
        "type": "referral-stalled" if verdict.code else "referral-unstalled",
        "task": resource_ref(task),
        "status": verdict.status,
        "code": verdict.code,
        "at": format_instant(now),
    }
    if verdict.since:
        event["since"] = format_instant(verdict.since)
    if verdict.due:
        event["due"] = format_instant(verdict.due)
    return event


# -- the configured policy --------------------------------------------------------------
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
