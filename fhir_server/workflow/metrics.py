"""`$referral-metrics`: did referred patients get care, how fast, for whom, and did they get
better. Pure: the caller selects the referral rows (storage, narrowed to what the caller may
see) and names the references; this module groups, counts, ranks and shapes the answer as
Parameters and as CSV (both from the same figures, so they always agree).

Counted: every referral Task made (first requested, else authored) in [start, end). Per
group (see `DIMENSIONS`):
  total, patients        Tasks and distinct patients
  outcome                the outcome class of each Task (referral_facts.OUTCOMES)
  funnel                 sent (total minus draft, entered-in-error and redirected: a
                         redirected referral counts once, through the Task that carries it
                         on), accepted (ever), started (first service: in-progress, or
                         completed directly), completed; `lost` = previous stage - this one
  acceptanceRate         accepted / (accepted + rejected); redirects are not rejections
  closedLoopRate         completed / sent
  duration               accept, first-service, completion: hours from the referral, as
                         count, median, p90 (nearest rank) and a distribution in `BUCKETS`
  stalled                Tasks carrying each stalled mark now (by the clock that ran out)
  rejectionReason, cancellationReason  statusReason.text with counts
  screening              baseline/follow-up pairs per instrument (measurement.py)
Equity dimensions suppress small cells (equity.py), threshold N (default 11):
  * a group of fewer than N patients is hidden: its counts of 1 to N-1 show as "<N", larger
    ones as "suppressed", and it has no rate, duration or mean;
  * when that hides exactly one group of a dimension, the next smallest group is hidden the
    same way, so that the hidden one cannot be computed from the total;
  * in the other groups, every count of 1 to N-1 shows as "<N", and a rate whose numerator,
    denominator or their difference is 1 to N-1, a median of fewer than N durations and a
    mean of fewer than N pairs are left out.
  Known limit: differences between two counts of a shown group (sent - accepted) are not
  suppressed themselves; the dashboard's equity table shows rates, not such differences.
Rates are decimals in [0, 1] rounded to 4 places; durations are UCUM `h` Quantities.
"""

from __future__ import annotations

import csv
import io
import math
import re
import statistics
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from fhir_server.errors import FhirError
from fhir_server.workflow import equity
from fhir_server.workflow.measurement import INSTRUMENTS, Pairs
from fhir_server.workflow.referral_facts import NOT_SENT, OUTCOMES, instant_us, outcome_of
from fhir_server.workflow.stalled import CODES as STALLED_CODES
from fhir_server.workflow.task_rules import REFERRAL_STATUSES

_UCUM = "http://unitsofmeasure.org"
HOUR_US = 3_600_000_000

ORGANIZATION_DIMENSIONS = ("requester", "owner", "category", "service", "priority")
PERIOD_DIMENSIONS = ("week", "month")
DIMENSIONS: tuple[str, ...] = ("all", *ORGANIZATION_DIMENSIONS, *PERIOD_DIMENSIONS,
                               *equity.DIMENSIONS)
REFERENCE_DIMENSIONS = frozenset({"requester", "owner", "service"})
FILTERS = ("requester", "owner", "category", "service", "priority")
"""Query parameters that narrow the referrals counted (repeat or comma-separate for OR)."""

COLUMNS: tuple[str, ...] = (
    "status", "redirected", "stalled", "status_reason", "requester", "owner", "category",
    "service", "priority", "patient_id", "referred_at", "accepted_at", "started_at",
    "completed_at", "age_years", "sex", "race", "ethnicity", "language", "coverage",
    "phq9_base", "phq9_follow", "gad7_base", "gad7_follow",
)
"""The columns of a referral row, in the order the storage query returns them."""
_C = {name: i for i, name in enumerate(COLUMNS)}

MEASURES: tuple[tuple[str, str, str], ...] = (
    ("accept", "accepted_at", "Time to accept"),
    ("first-service", "started_at", "Time to first service"),
    ("completion", "completed_at", "Time to completion"),
)
BUCKETS: tuple[tuple[str, float | None, str], ...] = (
    ("under-4h", 4, "Under 4 hours"), ("4-24h", 24, "4 to 24 hours"),
    ("1-3d", 72, "1 to 3 days"), ("3-7d", 168, "3 to 7 days"), ("1-2w", 336, "1 to 2 weeks"),
    ("2-4w", 672, "2 to 4 weeks"), ("4w-plus", None, "4 weeks or more"),
)
"""Distribution buckets of a duration in hours: [previous bound, bound)."""
STAGES = ("sent", "accepted", "started", "completed")
PAIR_COLUMNS = {"phq-9": ("phq9_base", "phq9_follow"), "gad-7": ("gad7_base", "gad7_follow")}
UNKNOWN_KEYS = {"requester": "unknown", "owner": "unassigned", "category": "unspecified",
                "service": "unspecified", "coverage": "none"}
KEY_WORDS = {"unknown": "Not recorded", "unassigned": "Not yet assigned (open referral)",
             "unspecified": "Not specified", "all": "All referrals"}
PRIORITY_WORDS = {"routine": "Routine", "urgent": "Urgent", "asap": "As soon as possible",
                  "stat": "Crisis (immediately)"}


# -- the question ------------------------------------------------------------------------
@dataclass(frozen=True)
class MetricsQuery:
    """What to count and how to group it (parsed from the operation's parameters)."""

    dimensions: tuple[str, ...] = ("all",)
    start: int | None = None  # epoch microseconds, inclusive
    end: int | None = None  # exclusive
    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def filter(self, name: str) -> tuple[str, ...]:
        return dict(self.filters).get(name, ())


def _expression(name: str) -> str:
    return f"Parameters.parameter.where(name='{name}').value"


def _values(params: Sequence[tuple[str, str]], name: str) -> list[str]:
    out: list[str] = []
    for key, value in params:
        if key == name:
            out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def parse_query(params: Sequence[tuple[str, str]]) -> MetricsQuery:
    """The query from `$referral-metrics` parameters; 400 naming the parameter otherwise.

    `group-by` (repeat or comma-separate) picks the dimensions; without it the referrals
    are grouped by `owner` when an owner filter is given, else by `requester` (the first
    version's behaviour). An `all` group with the totals always comes first.
    """
    known = {"group-by", "start", "end", *FILTERS}
    for key, _ in params:
        if key not in known and not key.startswith("_"):
            raise FhirError(400, "not-supported", f"Unknown parameter '{key}' for "
                            f"$referral-metrics (known: {', '.join(sorted(known))})",
                            _expression(key))
    dimensions = _values(params, "group-by")
    for dim in dimensions:
        if dim not in DIMENSIONS:
            raise FhirError(400, "code-invalid", f"Unknown group-by '{dim}': use one of "
                            f"{', '.join(DIMENSIONS)}", _expression("group-by"))
    if not dimensions:
        dimensions = ["owner" if _values(params, "owner") else "requester"]
    ordered = ("all", *[d for d in dict.fromkeys(dimensions) if d != "all"])
    times: dict[str, int | None] = {}
    for name in ("start", "end"):
        raw = _values(params, name)
        if len(raw) > 1:
            raise FhirError(400, "invalid", f"Give '{name}' once", _expression(name))
        times[name] = _instant(name, raw[0]) if raw else None
    if times["start"] is not None and times["end"] is not None \
            and times["end"] <= times["start"]:
        raise FhirError(400, "invalid", "'end' must be after 'start'", _expression("end"))
    filters = tuple((name, tuple(dict.fromkeys(_values(params, name)))) for name in FILTERS
                    if _values(params, name))
    return MetricsQuery(ordered, times["start"], times["end"], filters)


_TIME_PARAMETER = re.compile(
    r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2}))?$")


def _instant(name: str, value: str) -> int:
    us = instant_us(value) if _TIME_PARAMETER.match(value) else None
    if us is None:
        raise FhirError(400, "invalid", f"Invalid {name} '{value}': give a date (2026-01-31) "
                        "or an instant with a time zone (2026-01-31T09:00:00Z)",
                        _expression(name))
    return us


# -- grouping ------------------------------------------------------------------------------
def week_of(at_us: int) -> str:
    """The Monday (UTC) of the week an instant falls in, as YYYY-MM-DD."""
    day = datetime.fromtimestamp(at_us / 1_000_000, tz=UTC).date()
    return (day - timedelta(days=day.weekday())).isoformat()


def month_of(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1_000_000, tz=UTC).strftime("%Y-%m")


def _column_key(dimension: str) -> Callable[[tuple], str]:
    index = _C[dimension]
    missing = UNKNOWN_KEYS.get(dimension, "unknown")
    return lambda row: row[index] or missing


def key_function(dimension: str) -> Callable[[tuple], str]:
    """The group key of a referral row for `dimension`."""
    if dimension == "all":
        return lambda row: "all"
    if dimension == "week":
        return lambda row: week_of(row[_C["referred_at"]])
    if dimension == "month":
        return lambda row: month_of(row[_C["referred_at"]])
    if dimension == "age-band":
        return lambda row: equity.age_band(row[_C["age_years"]])
    if dimension == "priority":
        return lambda row: row[_C["priority"]] or "routine"
    return _column_key(dimension)


@dataclass
class Group:
    """The counts of one group of referrals."""

    dimension: str
    key: str
    total: int = 0
    patients: int = 0  # distinct patients
    statuses: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    stages: Counter = field(default_factory=Counter)
    durations: dict[str, list[float]] = field(default_factory=dict)  # sorted hours
    stalled: Counter = field(default_factory=Counter)
    rejection_reasons: Counter = field(default_factory=Counter)
    cancellation_reasons: Counter = field(default_factory=Counter)
    pairs: dict[str, Pairs] = field(default_factory=lambda: {i: Pairs() for i in INSTRUMENTS})
    threshold: int = 0  # the small-cell threshold in force (equity dimensions)
    suppressed: bool = False


_STALLED_CODES = (None, *STALLED_CODES)
_STATUSES = (*REFERRAL_STATUSES, "unknown")


def _state_code(row: tuple) -> int:
    """Status, redirect, stalled mark, ever accepted and ever started of a row as one
    small integer (grouping counts them with one C-level Counter per dimension)."""
    status = row[_C["status"]]
    s = _STATUSES.index(status) if status in _STATUSES else len(_STATUSES) - 1
    stalled = row[_C["stalled"]]
    t = _STALLED_CODES.index(stalled) if stalled in _STALLED_CODES else 0
    return ((((s * 2 + bool(row[_C["redirected"]])) * len(_STALLED_CODES) + t) * 2
             + (row[_C["accepted_at"]] is not None)) * 2 + (row[_C["started_at"]] is not None))


def _decode(code: int) -> tuple[str, bool, str | None, bool, bool]:
    started, code = bool(code % 2), code // 2
    accepted, code = bool(code % 2), code // 2
    stalled, code = _STALLED_CODES[code % len(_STALLED_CODES)], code // len(_STALLED_CODES)
    redirected, code = bool(code % 2), code // 2
    return _STATUSES[code], redirected, stalled, accepted, started


@dataclass
class _Prepared:
    """What every grouping needs, computed once per row."""

    codes: list[int]
    patients: list
    reasons: list[tuple[int, str, str]]  # (row, outcome, reason) of rejected and cancelled
    durations: dict[str, tuple[list[int], list[float | None]]]  # rows by value, values
    pairs: list[tuple[int, str, int, int]]  # (row, instrument, baseline, follow-up)


def _prepare(rows: list[tuple]) -> _Prepared:
    codes = [_state_code(r) for r in rows]
    referred = _C["referred_at"]
    sent = [outcome_of(r[_C["status"]], bool(r[_C["redirected"]])) not in NOT_SENT
            for r in rows]
    durations = {}
    for measure, column, _label in MEASURES:
        at = _C[column]
        values = [max(r[at] - r[referred], 0) / HOUR_US if ok and r[at] is not None else None
                  for r, ok in zip(rows, sent, strict=True)]
        order = sorted((i for i, v in enumerate(values) if v is not None),
                       key=values.__getitem__)
        durations[measure] = (order, values)
    reasons = []
    for i, r in enumerate(rows):
        outcome = outcome_of(r[_C["status"]], bool(r[_C["redirected"]]))
        if outcome in ("rejected", "cancelled"):
            reasons.append((i, outcome, r[_C["status_reason"]] or "(no reason)"))
    pairs = []
    for instrument, (base_col, follow_col) in PAIR_COLUMNS.items():
        b, f = _C[base_col], _C[follow_col]
        pairs += [(i, instrument, r[b], r[f]) for i, r in enumerate(rows)
                  if sent[i] and r[b] is not None and r[f] is not None]
    return _Prepared(codes, [r[_C["patient_id"]] for r in rows], reasons, durations, pairs)


def _group(rows: list[tuple], prepared: _Prepared, dim: str) -> dict[str, Group]:
    keys = [key_function(dim)(r) for r in rows] if dim != "all" else ["all"] * len(rows)
    groups: dict[str, Group] = {}

    def group(key: str) -> Group:
        found = groups.get(key)
        if found is None:
            found = groups[key] = Group(dim, key)
        return found

    for (key, code), n in Counter(zip(keys, prepared.codes, strict=True)).items():
        g = group(key)
        status, redirected, stalled, accepted, started = _decode(code)
        g.total += n
        g.statuses[status] += n
        outcome = outcome_of(status, redirected)
        g.outcomes[outcome] += n
        if stalled:
            g.stalled[stalled] += n
        if outcome not in NOT_SENT:
            g.stages["sent"] += n
            g.stages["accepted"] += n * accepted
            g.stages["started"] += n * started
            g.stages["completed"] += n * (status == "completed")
    seen = set(zip(keys, prepared.patients, strict=True))
    for key, n in Counter(k for k, patient in seen if patient).items():
        groups[key].patients = n
    for i, outcome, reason in prepared.reasons:
        target = groups[keys[i]]
        (target.rejection_reasons if outcome == "rejected"
         else target.cancellation_reasons)[reason] += 1
    for measure, (order, values) in prepared.durations.items():
        lists: dict[str, list[float]] = defaultdict(list)
        for i in order:  # already sorted: each group's list comes out sorted
            lists[keys[i]].append(values[i])  # type: ignore[arg-type]
        for key, found in lists.items():
            groups[key].durations[measure] = found
    for i, instrument, base, follow in prepared.pairs:
        groups[keys[i]].pairs[instrument].add(base, follow)
    return groups


def group_rows(rows: Iterable[tuple], dimensions: Sequence[str]) -> dict[str, dict[str, Group]]:
    """Every row counted in one group per dimension."""
    rows = list(rows)
    prepared = _prepare(rows)
    return {dim: _group(rows, prepared, dim) for dim in dimensions}


def apply_small_cells(groups: Mapping[str, Group], threshold: int) -> None:
    """Mark the groups of an equity dimension that must show no figure (see module doc)."""
    if threshold <= 1:
        return
    for group in groups.values():
        group.threshold = threshold
    small = [g for g in groups.values() if g.patients < threshold]
    for group in small:
        group.suppressed = True
    if len(small) == 1:
        others = sorted((g for g in groups.values() if not g.suppressed),
                        key=lambda g: (g.patients, g.key))
        if others:
            others[0].suppressed = True


# -- figures -------------------------------------------------------------------------------
def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def bucket_of(hours: float) -> str:
    for code, bound, _label in BUCKETS:
        if bound is None or hours < bound:
            return code
    return BUCKETS[-1][0]


@dataclass(frozen=True)
class Duration:
    count: int
    median: float | None
    p90: float | None
    buckets: dict[str, int]


def duration_of(values: list[float]) -> Duration:
    """Count, median, p90 and distribution of durations (`values` sorted or not)."""
    ordered = sorted(values)
    buckets, below = {}, 0
    for code, bound, _label in BUCKETS:
        upto = len(ordered) if bound is None else bisect_left(ordered, bound)
        buckets[code], below = upto - below, upto
    if not ordered:
        return Duration(0, None, None, buckets)
    return Duration(len(ordered), round(statistics.median(ordered), 2),
                    round(percentile(ordered, 90), 2), buckets)


def outcome_column(outcome: str) -> str:
    """The figure (CSV column) counting an outcome class: `outcome_in_care`."""
    return "outcome_" + outcome.replace("-", "_")


def _rate(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


Figure = int | float | str | None


def figures(group: Group) -> dict[str, Figure]:
    """The group's figures by CSV column (`CSV_COLUMNS`), with the small-cell rule applied
    when the group has a threshold (equity groups). None: no figure (no data, left out)."""
    threshold = group.threshold
    hide = threshold > 1
    out: dict[str, Figure] = {"patients": group.patients, "total": group.total}
    sent = group.stages["sent"]
    previous = None
    for stage in STAGES:
        out[stage] = group.stages[stage]
        if previous is not None:
            out[f"lost_before_{stage}"] = group.stages[previous] - group.stages[stage]
        previous = stage
    for outcome in OUTCOMES:
        out[outcome_column(outcome)] = group.outcomes.get(outcome, 0)
    accepted, rejected = group.stages["accepted"], group.outcomes.get("rejected", 0)
    rates = {"acceptance_rate": (accepted, accepted + rejected),
             "closed_loop_rate": (group.stages["completed"], sent)}
    for name, (num, den) in rates.items():
        small = hide and (0 < num < threshold or 0 < den < threshold
                          or 0 < den - num < threshold)
        out[name] = None if small else _rate(num, den)
    for measure, _column, _label in MEASURES:
        duration = duration_of(group.durations.get(measure, []))
        prefix = f"time_to_{measure.replace('-', '_')}"
        out[f"{prefix}_n"] = duration.count
        small = hide and 0 < duration.count < threshold
        out[f"{prefix}_median_h"] = None if small else duration.median
        out[f"{prefix}_p90_h"] = None if small else duration.p90
        for code, count in duration.buckets.items():
            out[f"{prefix}_{code.replace('-', '_')}"] = count
    for code in STALLED_CODES:
        out[code.replace("-", "_")] = group.stalled.get(code, 0)
    for instrument, pairs in group.pairs.items():
        prefix = instrument.replace("-", "")
        out[f"{prefix}_pairs"] = pairs.count
        out[f"{prefix}_eligible"] = pairs.eligible
        out[f"{prefix}_responders"] = pairs.responders
        out[f"{prefix}_remitters"] = pairs.remitters
        small_pairs = hide and 0 < pairs.count < threshold
        small_eligible = hide and (0 < pairs.eligible < threshold)
        out[f"{prefix}_response_rate"] = None if small_eligible or (
            hide and 0 < pairs.responders < threshold) else _rate(pairs.responders,
                                                                  pairs.eligible)
        out[f"{prefix}_remission_rate"] = None if small_eligible or (
            hide and 0 < pairs.remitters < threshold) else _rate(pairs.remitters,
                                                                 pairs.eligible)
        mean = pairs.mean_change
        out[f"{prefix}_mean_change"] = None if small_pairs or mean is None else round(mean, 2)
    out["rejection_reasons"] = _reasons(group.rejection_reasons)
    out["cancellation_reasons"] = _reasons(group.cancellation_reasons)
    if hide:
        for name, value in out.items():
            if isinstance(value, int) and not isinstance(value, bool):
                out[name] = equity.suppress(value, threshold)
                if group.suppressed and value >= threshold:
                    out[name] = equity.HIDDEN
        if group.suppressed:
            for name, value in out.items():
                if isinstance(value, float):
                    out[name] = None
            out["rejection_reasons"] = out["cancellation_reasons"] = None
        else:
            out["rejection_reasons"] = _reasons(group.rejection_reasons, threshold)
            out["cancellation_reasons"] = _reasons(group.cancellation_reasons, threshold)
    return out


def _reasons(reasons: Counter, threshold: int = 0) -> str:
    ordered = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    if threshold > 1:
        return "; ".join(f"{reason} ({equity.suppress(count, threshold)})"
                         for reason, count in ordered)
    return "; ".join(f"{reason} ({count})" for reason, count in ordered)


# -- the answer ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """Grouped figures ready for Parameters and CSV."""

    query: MetricsQuery
    groups: list[tuple[Group, dict[str, Figure], str]]  # (group, figures, name)
    threshold: int


def answer(rows: Iterable[tuple], query: MetricsQuery, names: Mapping[str, str],
           threshold: int) -> Answer:
    """Group the referral rows and compute every figure. `names`: words for the reference
    and category keys (from the directory)."""
    grouped = group_rows(rows, query.dimensions)
    out: list[tuple[Group, dict[str, Figure], str]] = []
    for dim in query.dimensions:
        groups = grouped[dim]
        if dim in equity.DIMENSIONS:
            apply_small_cells(groups, threshold)
        if dim == "all" and not groups:
            groups = {"all": Group("all", "all")}
        for key in sorted(groups, key=lambda k: _sort_key(dim, k, names)):
            group = groups[key]
            out.append((group, figures(group), key_name(dim, key, names)))
    return Answer(query, out, threshold)


def _sort_key(dim: str, key: str, names: Mapping[str, str]) -> tuple:
    if dim in ("week", "month"):
        return (0, key)
    if dim == "age-band":
        order = [code for _l, _h, code in equity.AGE_BANDS]
        return (order.index(key) if key in order else len(order), key)
    if dim == "priority":
        order = list(PRIORITY_WORDS)
        return (order.index(key) if key in order else len(order), key)
    missing = key in KEY_WORDS or key in ("unknown", "none", "declined", "not-visible")
    return (int(missing), key_name(dim, key, names).lower(), key)


def key_name(dim: str, key: str, names: Mapping[str, str]) -> str:
    """Words for a group key."""
    if key in names:
        return names[key]
    if dim == "week":
        day = datetime.fromisoformat(key)
        return f"Week of {day.day} {day:%b %Y}"
    if dim == "month":
        return datetime.strptime(key, "%Y-%m").strftime("%B %Y")
    if dim == "priority":
        return PRIORITY_WORDS.get(key, key)
    if dim in equity.DIMENSIONS:
        return equity.label(dim, key)
    return KEY_WORDS.get(key, key)


def reference_keys(rows: Iterable[tuple], dimensions: Sequence[str]) -> set[str]:
    """The references among the group keys (to be named by the caller)."""
    wanted = [_C[d] for d in dimensions if d in REFERENCE_DIMENSIONS]
    return {row[i] for row in rows for i in wanted if row[i]}


# -- Parameters ----------------------------------------------------------------------------
def _quantity(hours: float) -> dict:
    return {"value": hours, "unit": "h", "system": _UCUM, "code": "h"}


def _count_part(name: str, value: Figure) -> dict:
    if isinstance(value, str):
        return {"name": name, "valueString": value}
    return {"name": name, "valueInteger": value}


def _key_part(dim: str, key: str, name: str) -> dict:
    if dim in REFERENCE_DIMENSIONS:
        if "/" in key:
            return {"name": "key", "valueReference": {"reference": key, "display": name}}
        return {"name": "key", "valueReference": {"display": name}}
    return {"name": "key", "valueCode": key}


def parameters(result: Answer, period: Mapping[str, str] | None = None) -> dict:
    """The answer as a Parameters resource (see the module docstring for the parts)."""
    params: list[dict] = [{"name": "groupBy", "valueCode": d} for d in result.query.dimensions]
    if period:
        params.append({"name": "period", "valuePeriod": dict(period)})
    for name, values in result.query.filters:
        for value in values:
            params.append({"name": "filter", "part": [
                {"name": "parameter", "valueCode": name}, {"name": "value", "valueString": value}]})
    if any(d in equity.DIMENSIONS for d in result.query.dimensions) and result.threshold > 1:
        params.append({"name": "smallCellThreshold", "valueInteger": result.threshold})
    for group, figs, name in result.groups:
        params.append({"name": "group", "part": _group_parts(group, figs, name)})
    return {"resourceType": "Parameters", "parameter": params}


def _group_parts(group: Group, figs: Mapping[str, Figure], name: str) -> list[dict]:
    parts: list[dict] = [{"name": "dimension", "valueCode": group.dimension},
                         _key_part(group.dimension, group.key, name),
                         {"name": "name", "valueString": name}]
    if group.suppressed:
        parts.append({"name": "suppressed", "valueBoolean": True})
    parts += [_count_part("patients", figs["patients"]), _count_part("total", figs["total"])]
    if not group.suppressed:
        for status in REFERRAL_STATUSES:
            count = group.statuses.get(status, 0)
            if count:
                parts.append({"name": "status", "part": [
                    {"name": "code", "valueCode": status},
                    _count_part("count", equity.suppress(count, group.threshold))]})
    for outcome in OUTCOMES:
        value = figs[outcome_column(outcome)]
        if value:
            parts.append({"name": "outcome", "part": [{"name": "code", "valueCode": outcome},
                                                     _count_part("count", value)]})
    previous = None
    for stage in STAGES:
        stage_parts = [{"name": "stage", "valueCode": stage}, _count_part("count", figs[stage])]
        if previous is not None:
            stage_parts.append(_count_part("lost", figs[f"lost_before_{stage}"]))
        parts.append({"name": "funnel", "part": stage_parts})
        previous = stage
    for name_, key in (("acceptanceRate", "acceptance_rate"),
                       ("closedLoopRate", "closed_loop_rate")):
        if figs[key] is not None:
            parts.append({"name": name_, "valueDecimal": figs[key]})
    for measure, _column, _label in MEASURES:
        prefix = f"time_to_{measure.replace('-', '_')}"
        sub: list[dict] = [{"name": "measure", "valueCode": measure},
                           _count_part("count", figs[f"{prefix}_n"])]
        for stat in ("median", "p90"):
            value = figs[f"{prefix}_{stat}_h"]
            if value is not None:
                sub.append({"name": stat, "valueQuantity": _quantity(value)})
        for code, _bound, _label in BUCKETS:
            sub.append({"name": "bucket", "part": [
                {"name": "code", "valueCode": code},
                _count_part("count", figs[f"{prefix}_{code.replace('-', '_')}"])]})
        parts.append({"name": "duration", "part": sub})
    for code in STALLED_CODES:
        parts.append({"name": "stalled", "part": [
            {"name": "clock", "valueCode": code},
            _count_part("count", figs[code.replace("-", "_")])]})
    if not group.suppressed:
        for part_name, reasons in (("rejectionReason", group.rejection_reasons),
                                   ("cancellationReason", group.cancellation_reasons)):
            for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
                parts.append({"name": part_name, "part": [
                    {"name": "reason", "valueString": reason},
                    _count_part("count", equity.suppress(count, group.threshold))]})
    for instrument in INSTRUMENTS:
        prefix = instrument.replace("-", "")
        sub = [{"name": "instrument", "valueCode": instrument}]
        for stat in ("pairs", "eligible", "responders", "remitters"):
            sub.append(_count_part(stat, figs[f"{prefix}_{stat}"]))
        for stat, key in (("responseRate", "response_rate"),
                          ("remissionRate", "remission_rate"),
                          ("meanChange", "mean_change")):
            if figs[f"{prefix}_{key}"] is not None:
                sub.append({"name": stat, "valueDecimal": figs[f"{prefix}_{key}"]})
        parts.append({"name": "screening", "part": sub})
    return parts


# -- CSV -------------------------------------------------------------------------------------
def csv_columns() -> list[str]:
    cols = ["dimension", "key", "name", "patients", "total", *STAGES,
            *[f"lost_before_{s}" for s in STAGES[1:]],
            *[outcome_column(o) for o in OUTCOMES], "acceptance_rate", "closed_loop_rate"]
    for measure, _column, _label in MEASURES:
        prefix = f"time_to_{measure.replace('-', '_')}"
        cols += [f"{prefix}_n", f"{prefix}_median_h", f"{prefix}_p90_h",
                 *[f"{prefix}_{code.replace('-', '_')}" for code, _b, _l in BUCKETS]]
    cols += [code.replace("-", "_") for code in STALLED_CODES]
    for instrument in INSTRUMENTS:
        prefix = instrument.replace("-", "")
        cols += [f"{prefix}_{s}" for s in ("pairs", "eligible", "responders", "remitters",
                                           "response_rate", "remission_rate", "mean_change")]
    return [*cols, "rejection_reasons", "cancellation_reasons"]


CSV_COLUMNS = csv_columns()


def metrics_csv(result: Answer) -> str:
    """The answer as CSV: a header, then one row per group (names beside references)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for group, figs, name in result.groups:
        row = {"dimension": group.dimension, "key": group.key, "name": name}
        row.update({k: ("" if v is None else v) for k, v in figs.items()})
        writer.writerow(row)
    return buffer.getvalue()
