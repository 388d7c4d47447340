"""Quiet hours: no reminder between two local times (for example 21:00-08:00 in the
patient's region). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo


@dataclass(frozen=True)
class QuietHours:
    """`start`-`end` local time in `zone` (across midnight when start > end); no quiet time
    when `start` is None."""

    start: time | None
    end: time | None
    zone: tzinfo

    @classmethod
    def parse(cls, text: str, zone: str) -> QuietHours:
        """`21:00-08:00` in an IANA zone ('' = never quiet); ValueError naming the setting."""
        try:
            tz = ZoneInfo(zone or "UTC")
        except (KeyError, ValueError):
            raise ValueError(f"FHIR_SERVER_REMINDER_TIMEZONE: unknown time zone {zone!r}"
                             ) from None
        if not text.strip():
            return cls(None, None, tz)
        try:
            first, last = (time.fromisoformat(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"FHIR_SERVER_REMINDER_QUIET_HOURS: {text!r} is not HH:MM-HH:MM"
                             ) from None
        return cls(first, last, tz)

    def quiet_at(self, moment: datetime) -> bool:
        if self.start is None or self.end is None or self.start == self.end:
            return False
        local = moment.astimezone(self.zone).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_allowed(self, moment: datetime) -> datetime:
        """`moment`, or the end of the quiet time it falls in."""
        if not self.quiet_at(moment):
            return moment
        assert self.end is not None
        local = moment.astimezone(self.zone)
        end = local.replace(hour=self.end.hour, minute=self.end.minute, second=0,
                            microsecond=0)
        if end <= local:
            end += timedelta(days=1)
        return end
