"""My numbers: referrals received, accepted, median time to accept, completed and stalled,
for a chosen period, from `$referral-metrics?group-by=all&owner=<my organization>` (a
referral counts in the period it was sent; definitions: `fhir_server/workflow/OUTCOMES.md`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from flask import Blueprint, Response, request

from fhir_server.web.apps import current, render, signed_in
from fhir_server.web.workspace.queue import Us

PERIODS = {"7d": "Last 7 days", "30d": "Last 30 days", "90d": "Last 90 days",
           "month": "This month", "last-month": "Last month", "year": "This year",
           "custom": "Dates I choose"}


@dataclass
class Period:
    key: str
    start: date
    end: date  # exclusive

    @property
    def last(self) -> date:
        """The period's last day (inclusive)."""
        return self.end - timedelta(days=1)

    @property
    def words(self) -> str:
        return f"{self.start.day} {self.start:%b %Y} to {self.last.day} {self.last:%b %Y}"


def period_of(key: str, since: str, until: str, today: date | None = None) -> Period:
    """The period a picker value means (days, in UTC; `end` exclusive)."""
    today = today or datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    if key == "custom":
        try:
            start, last = date.fromisoformat(since), date.fromisoformat(until)
        except ValueError:
            return period_of("30d", "", "", today)
        if last < start:
            start, last = last, start
        return Period("custom", start, last + timedelta(days=1))
    if key == "7d":
        return Period(key, tomorrow - timedelta(days=7), tomorrow)
    if key == "90d":
        return Period(key, tomorrow - timedelta(days=90), tomorrow)
    if key == "month":
        return Period(key, today.replace(day=1), tomorrow)
    if key == "last-month":
        first = today.replace(day=1)
        start = (first - timedelta(days=1)).replace(day=1)
        return Period(key, start, first)
    if key == "year":
        return Period(key, today.replace(month=1, day=1), tomorrow)
    return Period("30d", tomorrow - timedelta(days=30), tomorrow)


@dataclass
class Numbers:
    received: int = 0
    accepted: int = 0
    declined: int = 0
    completed: int = 0
    stalled: int = 0
    acceptance_rate: float | None = None
    median_accept_hours: float | None = None
    p90_accept_hours: float | None = None
    by_status: dict[str, int] = field(default_factory=dict)
    reasons: list[tuple[str, int]] = field(default_factory=list)


def numbers_from(parameters: dict) -> Numbers:
    """The figures of the single group (`group-by=all`) of a `$referral-metrics` answer."""
    out = Numbers()
    group = next((p.get("part") or [] for p in (parameters or {}).get("parameter") or []
                  if p.get("name") == "group"), [])
    for part in group:
        name = part.get("name")
        sub = {p.get("name"): p for p in part.get("part") or []}
        if name == "total":
            out.received = _count(part)
        elif name == "funnel" and _code(sub.get("stage")) == "accepted":
            out.accepted = _count(sub.get("count"))
        elif name == "stalled":
            out.stalled += _count(sub.get("count"))
        elif name == "acceptanceRate":
            out.acceptance_rate = float(part["valueDecimal"])
        elif name == "duration" and _code(sub.get("measure")) == "accept":
            out.median_accept_hours = _hours(sub.get("median"))
            out.p90_accept_hours = _hours(sub.get("p90"))
        elif name == "status":
            out.by_status[_code(sub.get("code"))] = _count(sub.get("count"))
        elif name == "rejectionReason":
            out.reasons.append((str((sub.get("reason") or {}).get("valueString") or ""),
                                _count(sub.get("count"))))
    out.completed = out.by_status.get("completed", 0)
    out.declined = out.by_status.get("rejected", 0)
    return out


def _count(part: dict | None) -> int:
    value = (part or {}).get("valueInteger")
    return value if isinstance(value, int) else 0


def _code(part: dict | None) -> str:
    return str((part or {}).get("valueCode") or "")


def _hours(part: dict | None) -> float | None:
    value = ((part or {}).get("valueQuantity") or {}).get("value")
    return float(value) if isinstance(value, (int, float)) else None


def hours_words(hours: float | None) -> str:
    """`45 minutes`, `5.5 hours`, `2.1 days`."""
    if hours is None:
        return "no referral accepted yet"
    if hours < 1:
        minutes = max(1, round(hours * 60))
        return f"{minutes} minute{'' if minutes == 1 else 's'}"
    if hours < 48:
        return f"{hours:.1f} hours".replace(".0 ", " ")
    return f"{hours / 24:.1f} days".replace(".0 ", " ")


def add_numbers_views(bp: Blueprint, us_or_none: Callable[[], Us | None],
                      no_organization: Callable[[], Response]) -> None:

    @bp.get("/numbers")
    @signed_in
    def numbers() -> Response:
        us = us_or_none()
        if us is None:
            return no_organization()
        key = request.args.get("period", "30d")
        period = period_of(key if key in PERIODS else "30d", request.args.get("since", ""),
                           request.args.get("until", ""))
        answer = current().api.operation("$referral-metrics", params=[
            ("group-by", "all"), ("owner", us.organization),
            ("start", period.start.isoformat()), ("end", period.end.isoformat())])
        return render("workspace/numbers.html", us=us, period=period, periods=PERIODS,
                      n=numbers_from(answer), hours_words=hours_words)
