"""Distances for `$match`: the haversine great-circle distance, and a per-query `Ruler` that
gives the same numbers from positions whose trigonometry was computed once (`prepare`)."""

from __future__ import annotations

import math

EARTH_KM = 6371.0088
KM_PER_DEGREE = 111.195  # the equirectangular estimate used to skip far positions

Prepared = tuple[tuple[float, float, float, float, float], ...]


def haversine_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance in kilometres."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin(
        (lon2 - lon1) / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def prepare(positions: tuple[tuple[float, float], ...]) -> Prepared:
    """(lat, lon, lat radians, lon radians, cos lat) of each position."""
    out = []
    for lat, lon in positions:
        rlat = math.radians(lat)
        out.append((lat, lon, rlat, math.radians(lon), math.cos(rlat)))
    return tuple(out)


class Ruler:
    """Distances from one point with one radius (`nearest` as used to rank)."""

    __slots__ = ("lat0", "lon0", "scale", "bound", "rlat0", "rlon0", "cos0")

    def __init__(self, point: tuple[float, float], radius_km: float) -> None:
        self.lat0, self.lon0 = point
        self.scale = math.cos(math.radians(self.lat0))
        self.bound = radius_km * 1.02 + 1
        self.rlat0, self.rlon0 = math.radians(self.lat0), math.radians(self.lon0)
        self.cos0 = math.cos(self.rlat0)

    def nearest(self, prepared: Prepared) -> float:
        """Distance to the nearest position, 2 decimals: haversine (bit for bit as
        `haversine_km`) when it may be within the radius; beyond it, the equirectangular
        estimate (only orders near misses)."""
        lat0, lon0, scale, bound = self.lat0, self.lon0, self.scale, self.bound
        rlat0, rlon0, cos0 = self.rlat0, self.rlon0, self.cos0
        sin, hypot = math.sin, math.hypot
        best = math.inf
        for lat, lon, rlat, rlon, cos_lat in prepared:
            dist = KM_PER_DEGREE * hypot(lat - lat0, (lon - lon0) * scale)
            if dist <= bound:
                h = sin((rlat - rlat0) / 2) ** 2 + cos0 * cos_lat * sin((rlon - rlon0) / 2) ** 2
                dist = 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(h)))
            if dist < best:
                best = dist
        return round(best, 2)
