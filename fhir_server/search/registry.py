"""The search parameter registry: R4 SearchParameters plus Gravity SDOHCC ones.

Loaded once from the shipped `data/search_data.json.gz` (built by `data/build.py` from the
official definitions). Each branch of a parameter's FHIRPath expression is either a list
of walker steps (plain dotted paths) or a FHIRPath string for the few complex cases.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "search_data.json.gz"

# Modifiers each parameter type supports (beyond :missing, which all support).
MODIFIERS: dict[str, frozenset[str]] = {
    "string": frozenset({"exact", "contains", "missing"}),
    "token": frozenset({"not", "text", "missing", "of-type", "in", "not-in"}),
    "reference": frozenset({"missing", "identifier"}),  # plus :Type
    "date": frozenset({"missing"}),
    "number": frozenset({"missing"}),
    "quantity": frozenset({"missing"}),
    "uri": frozenset({"below", "above", "missing"}),
    "composite": frozenset({"missing"}),
    "special": frozenset(),
}

# Parameters served from columns of the resources table.
COLUMN_PARAMS = frozenset({"_id", "_lastUpdated"})


@dataclass(frozen=True)
class Branch:
    """One union branch of a SearchParameter expression."""

    steps: tuple[tuple[Any, ...], ...] = ()
    types: tuple[str, ...] = ()
    fhirpath: str | None = None
    components: tuple[tuple[Branch, ...], ...] = ()  # composite: per component, its branches


@dataclass(frozen=True)
class SearchParamDef:
    """A search parameter as this server supports it for one resource type."""

    code: str
    type: str
    base: str
    url: str
    description: str = ""
    targets: tuple[str, ...] = ()
    branches: tuple[Branch, ...] = ()
    component_types: tuple[str, ...] = ()
    modifiers: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_column(self) -> bool:
        """True when served by the resources table (`_id`, `_lastUpdated`), not an index."""
        return self.code in COLUMN_PARAMS


def _branch(raw: dict[str, Any]) -> Branch:
    return Branch(
        steps=tuple(tuple(s) if s[0] != "c" else ("c", s[1], tuple(s[2])) for s in
                    raw.get("steps", ())),
        types=tuple(raw.get("types", ())),
        fhirpath=raw.get("fhirpath"),
        components=tuple(tuple(_branch(b) for b in comp) for comp in raw.get("components", ())),
    )


@cache
def _data() -> dict[str, Any]:
    return json.loads(gzip.decompress(DATA_FILE.read_bytes()))


@cache
def params_for(res_type: str) -> dict[str, SearchParamDef]:
    """All search parameters for a resource type, by code (empty for unknown types)."""
    tdata = _data()["types"].get(res_type)
    if tdata is None:
        return {}
    out: dict[str, SearchParamDef] = {}
    for code, p in tdata["params"].items():
        mods = MODIFIERS.get(p["type"], frozenset())
        if p["type"] == "reference":
            mods = mods | frozenset(p.get("target", ()))
        out[code] = SearchParamDef(
            code=code, type=p["type"], base=res_type, url=p["url"],
            description=p.get("description", ""), targets=tuple(p.get("target", ())),
            branches=tuple(_branch(b) for b in p.get("branches", ())),
            component_types=tuple(p.get("components", ())), modifiers=mods,
        )
    return out


def get_param(res_type: str, code: str) -> SearchParamDef | None:
    """One parameter, or None when the type does not have it."""
    return params_for(res_type).get(code)


@cache
def all_resource_types() -> tuple[str, ...]:
    """Every R4 resource type, sorted."""
    return tuple(sorted(_data()["types"]))


def summary_elements(res_type: str) -> frozenset[str]:
    """Top-level element names marked isSummary for the type."""
    t = _data()["types"].get(res_type)
    return frozenset(t["summary"]) if t else frozenset()


def mandatory_elements(res_type: str) -> frozenset[str]:
    """Top-level element names with min >= 1 for the type."""
    t = _data()["types"].get(res_type)
    return frozenset(t["mandatory"]) if t else frozenset()


def patient_compartment() -> dict[str, list[str]]:
    """Resource type -> the parameters that place it in a Patient's compartment."""
    return dict(_data()["patient_compartment"])


def reference_params(res_type: str) -> dict[str, SearchParamDef]:
    """The reference-type parameters of a resource type (for _include / _revinclude)."""
    return {c: p for c, p in params_for(res_type).items() if p.type == "reference"}
