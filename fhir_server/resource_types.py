"""The R4 (4.0.1) resource types this server accepts, shipped with the product."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent / "data" / "r4_resource_types.json"
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@lru_cache(maxsize=1)
def resource_types() -> frozenset[str]:
    """Every concrete R4 resource type name."""
    return frozenset(json.loads(_DATA.read_text()))


def is_resource_type(name: str) -> bool:
    return name in resource_types()


def is_resource_id(text: str) -> bool:
    """True when `text` has the R4 `id` syntax: 1-64 of A-Z, a-z, 0-9, '-' and '.'."""
    return _ID.fullmatch(text) is not None
