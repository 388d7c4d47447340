"""Granular scopes and the patient context, checked on one resource.

A granular scope `patient/Observation.rs?category=laboratory` allows exactly the resources a
search `Observation?category=laboratory` returns: the check uses the search matcher
(`fhir_server/search/match.py`) over the resource's index values, and searches are narrowed
with the same parameters in SQL (`interactions/access.py`), so the two agree. Criteria the
matcher cannot evaluate on one resource (chains, `_has`, `:in` / `:not-in`) and malformed or
unknown parameters fail closed: no match.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.search import match
from fhir_server.search.registry import patient_compartment

in_patient_compartment = match.in_patient_compartment


def compartment_params(res_type: str) -> list[str]:
    """Search parameters that put a `res_type` resource in a Patient compartment."""
    return list(patient_compartment().get(res_type, []))


def matches(resource: dict[str, Any] | match.Indexed,
            params: Iterable[tuple[str, str]]) -> bool:
    """True when `resource` matches every (AND) granular parameter."""
    subject = match.indexed(resource)
    try:
        criteria = match.criteria(subject.res_type, tuple(params))
    except FhirError:
        return False
    return match.matches(subject, criteria)
