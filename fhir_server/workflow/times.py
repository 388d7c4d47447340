"""FHIR date/time parsing and business-day arithmetic."""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, date, datetime, time, timedelta, tzinfo


def parse_instant(value: str | None) -> datetime | None:
    """A FHIR dateTime/instant as an aware datetime (UTC when no offset; None if unparsable)."""
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_instant(value: datetime) -> str:
    """An aware datetime as a FHIR instant in UTC ("...Z")."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def is_business_day(day: date, holidays: Collection[date] = ()) -> bool:
    """Monday to Friday and not a listed holiday."""
    return day.weekday() < 5 and day not in holidays


def add_business_days(start: datetime, days: int, tz: tzinfo = UTC,
                      holidays: Collection[date] = ()) -> datetime:
    """`start` plus `days` business days, same local time of day.

    A start outside business days counts from the beginning (00:00) of the next business day.
    """
    local = start.astimezone(tz)
    if not is_business_day(local.date(), holidays):
        day = local.date()
        while not is_business_day(day, holidays):
            day += timedelta(days=1)
        local = datetime.combine(day, time(0), tzinfo=tz)
    day, remaining = local.date(), days
    while remaining > 0:
        day += timedelta(days=1)
        if is_business_day(day, holidays):
            remaining -= 1
    result = datetime.combine(day, local.timetz().replace(tzinfo=None), tzinfo=tz)
    return result.astimezone(start.tzinfo or UTC)
