"""What the CapabilityStatement says about search: exactly the parameters that work."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir_server.search.registry import all_resource_types, params_for, reference_params

_TYPE_DOCS = {
    "_id": "Logical id of the resource",
    "_lastUpdated": "When the resource version last changed",
}


def capability_search_params(res_type: str) -> list[dict[str, Any]]:
    """CapabilityStatement.rest.resource.searchParam entries for a resource type."""
    out = []
    for code, p in sorted(params_for(res_type).items()):
        if p.type == "special" and code != "near":
            continue
        if not p.is_column and not p.branches:
            continue
        entry: dict[str, Any] = {"name": code, "definition": p.url, "type": p.type}
        doc = p.description or _TYPE_DOCS.get(code)
        if doc:
            entry["documentation"] = doc
        out.append(entry)
    return out


def supported_includes(res_type: str) -> list[str]:
    """`_include` values: every reference parameter of the type, plus the `*` wildcard."""
    refs = sorted(reference_params(res_type))
    return [f"{res_type}:{code}" for code in refs] + ([f"{res_type}:*"] if refs else [])


@cache
def supported_revincludes(res_type: str) -> list[str]:
    """`_revinclude` values: reference parameters of any type that may point at res_type."""
    out = []
    for src in all_resource_types():
        for code, p in sorted(reference_params(src).items()):
            if not p.targets or res_type in p.targets:
                out.append(f"{src}:{code}")
    return out
