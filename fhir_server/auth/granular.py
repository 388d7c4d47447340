"""Pure checks of a resource against granular scope parameters and the Patient compartment.

Data: `data/search_paths.json` (built from the R4 SearchParameters and the Patient
CompartmentDefinition by `data/_generate.py`) gives the FHIRPath of each token and
reference search parameter. Supported granular forms, matching FHIR token search:
``code``, ``system|code``, ``|code`` (no system), ``system|`` and, for references,
``Type/id`` or ``id``. Any other parameter type or a modifier fails closed (no match).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhirpathpy import compile as fp_compile
from fhirpathpy.models import models

_DATA = json.loads((Path(__file__).parent / "data" / "search_paths.json").read_text())
PARAMS: dict[str, dict[str, dict[str, str]]] = _DATA["params"]
PATIENT_COMPARTMENT: dict[str, list[str]] = _DATA["patient_compartment"]


@lru_cache(maxsize=2048)
def _compiled(expr: str) -> Callable[[dict], list]:
    return fp_compile(expr, models["r4"])


def param_values(resource: dict, name: str) -> tuple[str, list[Any]] | None:
    """(type, values) of a token/reference search parameter on `resource`; None if unknown."""
    if name == "_id":
        return "id", [resource.get("id")]
    spec = PARAMS.get(resource.get("resourceType", ""), {}).get(name)
    if spec is None:
        return None
    values = _compiled(spec["expr"])(resource)
    target = spec.get("target")
    if target:  # the definition's `.where(resolve() is T)`, applied to the reference text
        values = [v for v in values if isinstance(v, dict)
                  and str(v.get("reference", "")).split("/_history/")[0].split("/")[-2:-1]
                  == [target]]
    return spec["type"], values


def _codings(value: Any) -> Iterable[tuple[str | None, str | None]]:
    if isinstance(value, str | bool):
        yield None, str(value).lower() if isinstance(value, bool) else value
    elif isinstance(value, dict):
        if "coding" in value:
            for c in value.get("coding") or []:
                yield c.get("system"), c.get("code")
        elif "code" in value or "system" in value:  # Coding, Quantity
            yield value.get("system"), value.get("code")
        elif "value" in value:  # Identifier, ContactPoint
            yield value.get("system"), value.get("value")


def token_matches(values: list[Any], query: str) -> bool:
    """FHIR token matching of `query` against extracted element values."""
    system, bar, code = query.partition("|")
    for sys_, code_ in (c for v in values for c in _codings(v)):
        if not bar:
            if code_ == query:
                return True
        elif system == "" and code_ == code and not sys_:
            return True
        elif code == "" and sys_ == system:
            return True
        elif sys_ == system and code_ == code:
            return True
    return False


def reference_matches(values: list[Any], query: str) -> bool:
    """Reference matching: `Type/id` exactly, or a bare id against the reference's id part."""
    for v in values:
        ref = v.get("reference") if isinstance(v, dict) else None
        if not ref:
            continue
        ref = ref.split("/_history/")[0]
        tail = "/".join(ref.split("/")[-2:])
        if query == tail or ("/" not in query and tail.split("/")[-1] == query):
            return True
    return False


def param_matches(resource: dict, name: str, query: str) -> bool:
    """Does `resource` match the search `name=query` (comma = OR)? Unknown → False."""
    if ":" in name:
        return False
    found = param_values(resource, name)
    if found is None:
        return False
    kind, values = found
    for alt in query.split(","):
        if kind == "id" and alt in values:
            return True
        if kind == "token" and token_matches(values, alt):
            return True
        if kind == "reference" and reference_matches(values, alt):
            return True
    return False


def matches(resource: dict, params: Iterable[tuple[str, str]]) -> bool:
    """True when `resource` matches every (AND) granular parameter."""
    return all(param_matches(resource, name, value) for name, value in params)


def compartment_params(res_type: str) -> list[str]:
    """Search parameters that put a `res_type` resource in a Patient compartment."""
    return list(PATIENT_COMPARTMENT.get(res_type, []))


def in_patient_compartment(resource: dict, patient_id: str) -> bool:
    """Is `resource` in the compartment of Patient/`patient_id` (the Patient itself included)?"""
    res_type = resource.get("resourceType", "")
    if res_type == "Patient":
        return resource.get("id") == patient_id
    target = f"Patient/{patient_id}"
    for name in compartment_params(res_type):
        found = param_values(resource, name)
        if found and found[0] == "reference" and reference_matches(found[1], target):
            return True
    return False
