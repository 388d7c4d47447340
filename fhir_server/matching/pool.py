"""Indexes over one candidate pool (the services of a category set) for `$match`.

`Pool` keeps, per pool, bitsets (Python ints, bit i = the pool's i-th service) of the static
hard filters -- memoised per criterion value -- and a grid of the services' positions, so a
query only examines the services that may match or be a near miss. Everything here prunes:
the distances and scores themselves come from `ranking` and are exactly the ones the plain
loop computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from fhir_server.matching.geo import KM_PER_DEGREE, Prepared, prepare
from mappers.directory_model import ServiceFacts

CELL_DEGREES = 0.05
_MARGIN_KM = 0.01  # cells are included generously: the grid only prunes
_MEMO_LIMIT = 512


def members(bits: int) -> list[int]:
    """Indexes of the set bits, ascending."""
    text = bin(bits)[:1:-1]
    out = []
    i = text.find("1")
    while i >= 0:
        out.append(i)
        i = text.find("1", i + 1)
    return out


def one_failure(masks: list[int], everything: int) -> tuple[int, int]:
    """(bits passing every mask, bits failing exactly one mask)."""
    passing = everything
    for m in masks:
        passing &= m
    prefix = [everything]
    for m in masks:
        prefix.append(prefix[-1] & m)
    suffix = everything
    once = 0
    for i in range(len(masks) - 1, -1, -1):
        once |= ~masks[i] & prefix[i] & suffix
        suffix &= masks[i]
    return passing, once & everything


@dataclass
class Pool:
    """The services of one category set, with their filter bitsets and position grid."""

    services: list[ServiceFacts]
    everything: int = 0
    cells: dict[tuple[int, int], int] = field(default_factory=dict)
    positioned: int = 0
    prepared: list[Prepared] = field(default_factory=list)
    _memo: dict[tuple, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.everything = (1 << len(self.services)) - 1
        for i, facts in enumerate(self.services):
            for lat, lon in facts.positions:
                key = (math.floor(lat / CELL_DEGREES), math.floor(lon / CELL_DEGREES))
                self.cells[key] = self.cells.get(key, 0) | (1 << i)
            if facts.positions:
                self.positioned |= 1 << i
            self.prepared.append(prepare(facts.positions))

    def mask(self, key: tuple, test: Callable[[ServiceFacts], bool]) -> int:
        """Bits of the services passing `test` (memoised under `key`)."""
        found = self._memo.get(key)
        if found is None:
            found = int("0" + "".join("1" if test(f) else "0"
                                      for f in reversed(self.services)), 2)
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[key] = found
        return found

    def near(self, point: tuple[float, float], bound_km: float) -> int:
        """Bits of the services with a position in a grid cell that comes within `bound_km`
        of `point` by the equirectangular estimate (a superset of those within it)."""
        lat0, lon0 = point
        scale = math.cos(math.radians(lat0))
        reach = (bound_km + _MARGIN_KM) / KM_PER_DEGREE
        rows = range(math.floor((lat0 - reach) / CELL_DEGREES),
                     math.floor((lat0 + reach) / CELL_DEGREES) + 1)
        if scale > 1e-3:
            lon_reach = reach / scale
            cols = range(math.floor((lon0 - lon_reach) / CELL_DEGREES),
                         math.floor((lon0 + lon_reach) / CELL_DEGREES) + 1)
        if scale <= 1e-3 or len(rows) * len(cols) > len(self.cells):
            keys = list(self.cells)
        else:
            keys = [(i, j) for i in rows for j in cols if (i, j) in self.cells]
        bits = 0
        for i, j in keys:
            dlat = max(0.0, i * CELL_DEGREES - lat0, lat0 - (i + 1) * CELL_DEGREES)
            dlon = max(0.0, j * CELL_DEGREES - lon0, lon0 - (j + 1) * CELL_DEGREES)
            if KM_PER_DEGREE * math.hypot(dlat, dlon * scale) <= bound_km + _MARGIN_KM:
                bits |= self.cells[(i, j)]
        return bits
