"""Value handling shared by indexing and querying: dates as ranges, strings, numbers.

Dates become half-open ranges [low, high) of integer microseconds since the Unix epoch
(UTC). A value without a time zone is taken as UTC. Unbounded ends use MIN_TIME/MAX_TIME.
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

MIN_TIME = -(2**62)
MAX_TIME = 2**62
STRING_MAX = 200
US = 1_000_000

_DATE_RE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2})(?::(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(text: str) -> tuple[int, int]:
    """The [low, high) microsecond range a FHIR date/dateTime/instant denotes.

    Raises ValueError on a malformed value.
    """
    m = _DATE_RE.match(text.strip())
    if not m:
        raise ValueError(f"not a FHIR date: {text!r}")
    y = int(m["y"])
    tz = m["tz"]
    offset = 0
    if tz and tz != "Z":
        sign = 1 if tz[0] == "+" else -1
        offset = sign * (int(tz[1:3]) * 3600 + int(tz[4:6]) * 60)
    if m["m"] is None:
        return _epoch(y, 1, 1), _epoch(y + 1, 1, 1)
    mo = int(m["m"])
    if not 1 <= mo <= 12:
        raise ValueError(f"bad month in {text!r}")
    if m["d"] is None:
        ny, nm = (y + 1, 1) if mo == 12 else (y, mo + 1)
        return _epoch(y, mo, 1), _epoch(ny, nm, 1)
    d = int(m["d"])
    if not 1 <= d <= calendar.monthrange(y, mo)[1]:
        raise ValueError(f"bad day in {text!r}")
    day_start = _epoch(y, mo, d)
    if m["H"] is None:
        return day_start, day_start + 86400 * US
    hh, mm = int(m["H"]), int(m["M"] or 0)
    ss = int(m["S"] or 0)
    if hh > 24 or mm > 59 or ss > 60:
        raise ValueError(f"bad time in {text!r}")
    start = day_start + ((hh * 60 + mm) * 60 + ss - offset) * US
    if m["f"] is not None:
        digits = m["f"]
        frac = int(digits[:6].ljust(6, "0"))
        unit = 10 ** max(0, 6 - len(digits))
        return start + frac, start + frac + max(unit, 1)
    if m["S"] is not None:
        return start, start + US
    if m["M"] is not None:
        return start, start + 60 * US
    return start, start + 3600 * US


def _epoch(y: int, mo: int, d: int) -> int:
    return (calendar.timegm((y, mo, d, 0, 0, 0)) if y >= 1 else -(2**61)) * US


def epoch_us_to_iso(us: int) -> str:
    """Render epoch microseconds as a FHIR instant (UTC)."""
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)
    return dt.isoformat(timespec="microseconds").replace("+00:00", "Z")


@lru_cache(maxsize=4096)
def normalize_string(text: str) -> str:
    """Lower-case, accents stripped, whitespace collapsed, cut to STRING_MAX characters."""
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.casefold().split())[:STRING_MAX]


def parse_decimal(text: str) -> Decimal:
    """A FHIR decimal; ValueError when malformed."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation as exc:
        raise ValueError(f"not a number: {text!r}") from exc
    if not value.is_finite():
        raise ValueError(f"not a number: {text!r}")
    return value


def decimal_range(value: Decimal) -> tuple[float, float]:
    """The implicit precision range of a search number: 100 -> [99.5, 100.5)."""
    exp = value.as_tuple().exponent
    assert isinstance(exp, int)
    half = Decimal(5).scaleb(exp - 1)
    return float(value - half), float(value + half)
