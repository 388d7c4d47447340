"""`$referral-metrics`: outcome metrics per organization, as Parameters and as CSV.

Definitions (per organization = Task.owner or Task.requester, by `group_by`):
  window           a Task counts when it was first requested (or, never requested, authored)
                   in [start, end)
  status counts    current Task.status of the counted Tasks
  acceptanceRate   accepted / (accepted + rejected), "accepted" = ever reached accepted
  timeToAcceptance requested -> first accepted, hours; median and p90 (nearest rank)
  timeToFirstService requested -> first in-progress (or completed when it skipped
                   in-progress), hours; median and p90
  completionRate   completed / counted Tasks that left draft, excluding entered-in-error
  rejectionReasons / cancellationReasons  counts of statusReason.text ("(no reason)" if none)
  stalled          Tasks currently carrying a stalled mark
Rates are decimals in [0, 1] rounded to 4 places; durations are UCUM `h` Quantities.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fhir_server.workflow.refs import normalize_ref
from fhir_server.workflow.stalled import current_mark
from fhir_server.workflow.task_rules import REFERRAL_STATUSES
from fhir_server.workflow.timeline import ordered_versions, status_changes
from fhir_server.workflow.times import format_instant, parse_instant

UNASSIGNED = "unassigned"
_UCUM = "http://unitsofmeasure.org"


@dataclass
class _Facts:
    status: str
    referred_at: datetime | None
    accepted_at: datetime | None = None
    service_at: datetime | None = None
    reason: str | None = None
    stalled: bool = False


@dataclass
class _Group:
    facts: list[_Facts] = field(default_factory=list)


def task_facts(versions: Sequence[dict | None]) -> _Facts | None:
    """The timing facts of one Task's history (None for an empty history)."""
    ordered = ordered_versions(list(versions))
    if not ordered:
        return None
    current = ordered[-1]
    first: dict[str, datetime] = {}
    for change in status_changes(ordered):
        if change.kind == "status" and change.status and change.at:
            first.setdefault(change.status, change.at)
    referred = first.get("requested") or parse_instant(current.get("authoredOn")) \
        or first.get(current.get("status") or "")
    service = first.get("in-progress") or first.get("completed")
    return _Facts(status=current.get("status") or "unknown", referred_at=referred,
                  accepted_at=first.get("accepted"), service_at=service,
                  reason=(current.get("statusReason") or {}).get("text"),
                  stalled=current_mark(current) is not None)


def referral_metrics(
    tasks_with_histories: Iterable[Sequence[dict | None]],
    *,
    group_by: str,
    start: datetime | None,
    end: datetime | None,
    organization: str | None = None,
) -> dict:
    """Metrics Parameters for Tasks given as their history versions (any order each).

    group_by: "owner" or "requester"; organization: keep only that group.
    """
    if group_by not in ("owner", "requester"):
        raise ValueError("group_by must be 'owner' or 'requester'")
    groups: dict[str, _Group] = defaultdict(_Group)
    for versions in tasks_with_histories:
        ordered = ordered_versions(list(versions))
        facts = task_facts(ordered)
        if facts is None or not _in_window(facts.referred_at, start, end):
            continue
        key = normalize_ref((ordered[-1].get(group_by) or {}).get("reference")) or UNASSIGNED
        if organization and key != normalize_ref(organization):
            continue
        groups[key].facts.append(facts)
    params: list[dict] = [{"name": "groupBy", "valueCode": group_by}]
    period = {k: format_instant(v) for k, v in (("start", start), ("end", end)) if v}
    if period:
        params.append({"name": "period", "valuePeriod": period})
    for key in sorted(groups):
        params.append({"name": "organization", "part": _group_parts(key, groups[key].facts)})
    return {"resourceType": "Parameters", "parameter": params}


def _in_window(at: datetime | None, start: datetime | None, end: datetime | None) -> bool:
    if at is None:
        return start is None and end is None
    return (start is None or at >= start) and (end is None or at < end)


def _group_parts(key: str, facts: list[_Facts]) -> list[dict]:
    ref = {"reference": key} if key != UNASSIGNED else {"display": UNASSIGNED}
    parts: list[dict] = [{"name": "reference", "valueReference": ref},
                         {"name": "total", "valueInteger": len(facts)}]
    counts = Counter(f.status for f in facts)
    for status in REFERRAL_STATUSES:
        if counts.get(status):
            parts.append({"name": "status", "part": [
                {"name": "code", "valueCode": status},
                {"name": "count", "valueInteger": counts[status]}]})
    accepted = sum(1 for f in facts if f.accepted_at)
    rejected = counts.get("rejected", 0)
    _rate(parts, "acceptanceRate", accepted, accepted + rejected)
    _durations(parts, "timeToAcceptance",
               [_hours(f.referred_at, f.accepted_at) for f in facts if f.accepted_at])
    _durations(parts, "timeToFirstService",
               [_hours(f.referred_at, f.service_at) for f in facts if f.service_at])
    sent = sum(1 for f in facts if f.status not in ("draft", "entered-in-error"))
    _rate(parts, "completionRate", counts.get("completed", 0), sent)
    for name, status in (("rejectionReason", "rejected"), ("cancellationReason", "cancelled")):
        reasons = Counter((f.reason or "(no reason)") for f in facts if f.status == status)
        for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            parts.append({"name": name, "part": [{"name": "reason", "valueString": reason},
                                                 {"name": "count", "valueInteger": count}]})
    parts.append({"name": "stalled", "valueInteger": sum(1 for f in facts if f.stalled)})
    return parts


def _hours(a: datetime | None, b: datetime | None) -> float | None:
    if a is None or b is None:
        return None
    return max((b - a).total_seconds(), 0.0) / 3600.0


def _rate(parts: list[dict], name: str, num: int, den: int) -> None:
    if den:
        parts.append({"name": name, "valueDecimal": round(num / den, 4)})


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100.0 * len(ordered)))
    return ordered[rank - 1]


def _durations(parts: list[dict], name: str, values: list[float | None]) -> None:
    clean = [v for v in values if v is not None]
    if not clean:
        return
    for suffix, value in (("Median", statistics.median(clean)), ("P90", percentile(clean, 90))):
        parts.append({"name": f"{name}{suffix}", "valueQuantity": {
            "value": round(value, 2), "unit": "h", "system": _UCUM, "code": "h"}})


CSV_COLUMNS = (
    ["organization", "total", *REFERRAL_STATUSES, "acceptance_rate",
     "time_to_acceptance_median_h", "time_to_acceptance_p90_h",
     "time_to_first_service_median_h", "time_to_first_service_p90_h",
     "completion_rate", "stalled", "rejection_reasons", "cancellation_reasons"]
)
_SCALARS = {
    "total": "total", "acceptanceRate": "acceptance_rate", "completionRate": "completion_rate",
    "stalled": "stalled", "timeToAcceptanceMedian": "time_to_acceptance_median_h",
    "timeToAcceptanceP90": "time_to_acceptance_p90_h",
    "timeToFirstServiceMedian": "time_to_first_service_median_h",
    "timeToFirstServiceP90": "time_to_first_service_p90_h",
}


def metrics_csv(parameters: dict) -> str:
    """The metrics Parameters as CSV (one row per organization, header first)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    for param in parameters.get("parameter") or []:
        if param.get("name") == "organization":
            writer.writerow(_csv_row(param.get("part") or []))
    return buffer.getvalue()


def _csv_row(parts: list[dict]) -> dict:
    row: dict = {c: "" for c in CSV_COLUMNS}
    row.update({s: 0 for s in REFERRAL_STATUSES})
    reasons: dict[str, list[str]] = {"rejectionReason": [], "cancellationReason": []}
    for part in parts:
        name = part.get("name")
        if name == "reference":
            ref = part["valueReference"]
            row["organization"] = ref.get("reference") or ref.get("display", "")
        elif name == "status":
            sub = {p["name"]: p for p in part["part"]}
            row[sub["code"]["valueCode"]] = sub["count"]["valueInteger"]
        elif name in reasons:
            sub = {p["name"]: p for p in part["part"]}
            reasons[name].append(f"{sub['reason']['valueString']} "
                                 f"({sub['count']['valueInteger']})")
        elif name in _SCALARS:
            value = next(v for k, v in part.items() if k.startswith("value"))
            row[_SCALARS[name]] = value["value"] if isinstance(value, dict) else value
    row["rejection_reasons"] = "; ".join(reasons["rejectionReason"])
    row["cancellation_reasons"] = "; ".join(reasons["cancellationReason"])
    return row
