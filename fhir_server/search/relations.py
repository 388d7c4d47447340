"""How a stored index value satisfies a search value, written once for SQL and for Python.

Each function builds the condition from comparisons (`<`, `>=`, ...) and the `all_of` /
`any_of` combinators it is given. Storage passes SQLAlchemy columns with `and_` / `or_` and
gets a SQL clause; the in-memory matcher (`match.py`) passes plain values with `every` /
`some` and gets a bool. So a search and a Subscription filter or granular scope cannot
disagree on prefixes, ranges, precision or string prefixes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from fhir_server.search.terms import DateValue, NearValue
from fhir_server.search.values import MAX_TIME, MIN_TIME

Combine = Callable[..., Any]
# Above every character: `value < prefix + TOP` bounds a prefix range.
TOP = "\U0010ffff"


def every(*conditions: bool) -> bool:
    """Python's AND with the signature of SQLAlchemy's `and_`."""
    return all(conditions)


def some(*conditions: bool) -> bool:
    """Python's OR with the signature of SQLAlchemy's `or_`."""
    return any(conditions)


def starts_with(value: Any, prefix: str, all_of: Combine) -> Any:
    """`value` begins with `prefix` (as a range, so an index serves it)."""
    return all_of(value >= prefix, value < prefix + TOP)


def approx_margin(search_low: int, now_us: int) -> int:
    """Date `ap` widening: 10% of the distance from now, at least one day."""
    return max(abs(now_us - search_low) // 10, 86_400_000_000)


def date_range_relation(v: DateValue, low: Any, high: Any, now_us: int, all_of: Combine,
                        any_of: Combine) -> Any:
    """A stored range [low, high) against a prefixed search range (FHIR date rules)."""
    sl, sh = v.low, v.high
    eq = all_of(low >= sl, high <= sh)
    if v.prefix == "eq":
        return eq
    if v.prefix == "ne":
        return any_of(low < sl, high > sh)
    if v.prefix == "gt":
        return high > sh
    if v.prefix == "lt":
        return low < sl
    if v.prefix == "ge":
        return any_of(high > sh, eq)
    if v.prefix == "le":
        return any_of(low < sl, eq)
    if v.prefix == "sa":
        return low >= sh
    if v.prefix == "eb":
        return high <= sl
    delta = approx_margin(sl, now_us)  # ap
    return all_of(low < min(sh + delta, MAX_TIME), high > max(sl - delta, MIN_TIME))


def date_point_relation(v: DateValue, t: Any, now_us: int, all_of: Combine,
                        any_of: Combine) -> Any:
    """`date_range_relation` for a stored instant t (the range [t, t+1)), index-friendly."""
    sl, sh = v.low, v.high
    if v.prefix == "eq":
        return all_of(t >= sl, t < sh)
    if v.prefix == "ne":
        return any_of(t < sl, t >= sh)
    if v.prefix in ("gt", "sa"):
        return t >= sh
    if v.prefix in ("lt", "eb"):
        return t < sl
    if v.prefix == "ge":
        return t >= sl
    if v.prefix == "le":
        return t < sh
    delta = approx_margin(sl, now_us)
    return all_of(t >= sl - delta, t < sh + delta)


def number_relation(prefix: str, value: float, low: float, high: float, stored: Any,
                    all_of: Combine, any_of: Combine) -> Any:
    """A stored number against a prefixed search number with its precision [low, high)."""
    if prefix == "eq":
        return all_of(stored >= low, stored < high)
    if prefix == "ne":
        return any_of(stored < low, stored >= high)
    if prefix in ("gt", "sa"):
        return stored > value
    if prefix in ("lt", "eb"):
        return stored < value
    if prefix == "ge":
        return stored >= value
    if prefix == "le":
        return stored <= value
    margin = abs(value) * 0.1  # ap
    return all_of(stored >= value - margin, stored <= value + margin)


def uri_ancestors(uri: str) -> list[str]:
    """`uri` and each of its path parents (for `:above`)."""
    out = [uri]
    cur = uri
    while "/" in cur.rstrip("/"):
        cur = cur.rstrip("/").rsplit("/", 1)[0]
        if cur.endswith(":/") or cur.endswith(":"):
            break
        out.append(cur)
    return out


def near_relation(v: NearValue, latitude: Any, longitude: Any, all_of: Combine) -> Any:
    """A stored point inside the box around the `near` point (distance in km)."""
    dlat = v.distance_km / 111.32
    dlon = v.distance_km / max(111.32 * math.cos(math.radians(v.latitude)), 1e-6)
    return all_of(latitude >= v.latitude - dlat, latitude <= v.latitude + dlat,
                  longitude >= v.longitude - dlon, longitude <= v.longitude + dlon)
