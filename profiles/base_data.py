"""The compact base R4 data (`base/r4-elements.json.gz`), read once: the element model
(`r4model`) and the FHIRPath compiler's choice stems (`fhirpath`) both come from it."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

BASE = Path(__file__).resolve().parent / "base"


@cache
def r4_elements() -> dict[str, Any]:
    """Elements, kinds, primitive regexes, choice stems and constraints of every R4 type."""
    with gzip.open(BASE / "r4-elements.json.gz") as fh:
        return json.load(fh)
