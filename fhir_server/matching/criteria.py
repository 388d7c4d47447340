"""$match criteria: from a Parameters body and/or a stored ServiceRequest and its patient.

Every bad parameter is reported with `Parameters.parameter[i]` as its expression; unknown
names and contradictions (e.g. a service category outside the level of care, crisis routing
with a non-crisis category) are 400s.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.matching.ranking import Criteria
from mappers.directory_model import (
    LEVEL_CATEGORIES,
    MODALITIES,
    PAYER_TYPE_CS,
    PAYER_TYPES,
    REFERRAL_CODE_CATEGORY,
    SERVICE_CATEGORIES,
    SNOMED,
    parse_day,
)

GEOLOCATION = "http://hl7.org/fhir/StructureDefinition/geolocation"
_UNITS = {"km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344}
PARAMS = ("service-category", "level-of-care", "priority", "safety-flag", "age", "birthdate",
          "language", "coverage", "modality", "near", "radius", "count", "near-misses",
          "stale-after-days")
MAX_COUNT = 100


def _value(param: dict) -> Any:
    for key, value in param.items():
        if key.startswith("value"):
            if isinstance(value, dict) and "code" in value:  # Coding
                return value["code"]
            if isinstance(value, dict) and "coding" in value:  # CodeableConcept
                return next((c.get("code") for c in value["coding"]), None)
            return value
    return None


def _bad(where: str, message: str, code: str = "invalid") -> Issue:
    return Issue("error", code, message, [where])


def category_of(code: str) -> str | None:
    """A directory category code, or the category of a SNOMED referral code."""
    if code in SERVICE_CATEGORIES:
        return code
    return REFERRAL_CODE_CATEGORY.get(code)


def parse_parameters(body: Any, base: Criteria) -> Criteria:
    """Apply a Parameters body to `base` criteria; 400 lists every bad parameter."""
    if body is None:
        return base
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "$match takes a Parameters resource", "Parameters")
    changes: dict[str, Any] = {}
    issues: list[Issue] = []
    categories: set[str] = set()
    for i, param in enumerate(body.get("parameter") or []):
        where = f"Parameters.parameter[{i}]"
        name, value = param.get("name"), _value(param)
        if name not in PARAMS:
            issues.append(_bad(f"{where}.name", f"unknown $match parameter '{name}'",
                               "not-supported"))
            continue
        if value is None:
            issues.append(_bad(where, f"parameter '{name}' has no value", "required"))
            continue
        try:
            _apply(name, value, changes, categories)
        except ValueError as exc:
            issues.append(_bad(where, f"{name}: {exc}", "value"))
    if categories:
        changes["categories"] = frozenset(categories)
    if issues:
        raise FhirError(400, issues[0].code, issues[0].diagnostics, issues=issues)
    crit = dataclasses.replace(base, **changes)
    check_consistent(crit, explicit=True)
    return crit


def _apply(name: str, value: Any, changes: dict, categories: set[str]) -> None:
    if name == "service-category":
        cat = category_of(str(value))
        if cat is None:
            raise ValueError(f"unknown service category '{value}'")
        categories.add(cat)
    elif name == "level-of-care":
        if value not in LEVEL_CATEGORIES:
            raise ValueError(f"'{value}' is not a level of care that leads to a referral "
                             f"({', '.join(LEVEL_CATEGORIES)})")
        changes["level"] = value
    elif name == "priority":
        if value not in ("routine", "urgent", "asap", "stat"):
            raise ValueError(f"unknown priority '{value}'")
        if value == "stat":
            changes.update(crisis=True, crisis_reason="priority stat")
    elif name == "safety-flag":
        if not isinstance(value, bool):
            raise ValueError("must be a boolean")
        if value:
            changes.update(crisis=True, crisis_reason="active safety flag")
    elif name in ("age", "radius"):
        number = _number(value, minimum=0 if name == "age" else 0.001)
        changes["age" if name == "age" else "radius_km"] = number
    elif name == "birthdate":
        born = parse_day(value)
        if born is None:
            raise ValueError(f"'{value}' is not a date")
        changes["age"] = age_on(born, date.today())
    elif name == "language":
        changes["language"] = str(value).lower()
    elif name in ("coverage", "modality"):
        allowed = PAYER_TYPES if name == "coverage" else MODALITIES
        if value not in allowed:
            raise ValueError(f"'{value}' is not one of {', '.join(allowed)}")
        changes[name] = value
    elif name == "near":
        changes["point"], radius = parse_near(str(value))
        if radius is not None:
            changes["radius_km"] = radius
    else:
        number = int(_number(value, minimum=0 if name != "count" else 1))
        key = {"count": "count", "near-misses": "near_misses",
               "stale-after-days": "stale_days"}[name]
        changes[key] = min(number, MAX_COUNT) if key != "stale_days" else number


def _number(value: Any, minimum: float) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"'{value}' is not a number") from None
    if number < minimum:
        raise ValueError(f"must be at least {minimum:g}")
    return number


def parse_near(raw: str) -> tuple[tuple[float, float], float | None]:
    """`lat|lon[|distance[|unit]]` as in the R4 `near` search parameter."""
    parts = raw.split("|")
    if len(parts) < 2:
        raise ValueError("expected latitude|longitude[|distance[|units]]")
    try:
        lat, lon = float(parts[0]), float(parts[1])
        dist = float(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError:
        raise ValueError(f"'{raw}' has a non-numeric part") from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise ValueError("latitude/longitude out of range")
    unit = parts[3] if len(parts) > 3 and parts[3] else "km"
    if unit not in _UNITS:
        raise ValueError(f"unknown distance unit '{unit}'")
    if dist is not None and dist <= 0:
        raise ValueError("distance must be positive")
    return (lat, lon), dist * _UNITS[unit] if dist is not None else None


def check_consistent(crit: Criteria, *, explicit: bool) -> None:
    """400 for criteria that can never match anything (contradictions)."""
    if not crit.categories and not crit.level and not crit.crisis:
        raise FhirError(400, "required", "$match needs a service-category, a level-of-care, "
                        "or crisis routing (priority stat / safety-flag)", "Parameters")
    if not explicit:
        return
    if crit.categories and crit.level in LEVEL_CATEGORIES \
            and not crit.categories & LEVEL_CATEGORIES[crit.level]:
        raise FhirError(400, "invalid", f"service-category {sorted(crit.categories)} "
                        f"contradicts level-of-care '{crit.level}'", "Parameters")
    if crit.crisis and crit.categories and "crisis" not in crit.categories:
        raise FhirError(400, "invalid", f"crisis routing ({crit.crisis_reason}) contradicts "
                        f"service-category {sorted(crit.categories)}", "Parameters")


def age_on(born: date, today: date) -> float:
    """Whole years of age on `today`."""
    return float(today.year - born.year - ((today.month, today.day) < (born.month, born.day)))


def patient_point(patient: dict) -> tuple[float, float] | None:
    """Coordinates of the patient's home address (core geolocation extension)."""
    for address in patient.get("address") or []:
        for ext in address.get("extension") or []:
            if ext.get("url") != GEOLOCATION:
                continue
            sub = {s.get("url"): s.get("valueDecimal") for s in ext.get("extension") or []}
            lat, lon = sub.get("latitude"), sub.get("longitude")
            if isinstance(lat, int | float) and isinstance(lon, int | float):
                return float(lat), float(lon)
    return None


def patient_language(patient: dict) -> str | None:
    """The preferred (else first) communication language code of a Patient."""
    comms = patient.get("communication") or []
    chosen = next((c for c in comms if c.get("preferred")), comms[0] if comms else None)
    codes = [c.get("code") for c in ((chosen or {}).get("language") or {}).get("coding") or []]
    return str(codes[0]).lower() if codes and codes[0] else None


def sr_categories(sr: dict) -> frozenset[str]:
    """Directory categories of a ServiceRequest's SNOMED code."""
    codes = [c.get("code") for c in (sr.get("code") or {}).get("coding") or []
             if c.get("system") == SNOMED]
    return frozenset(c for c in (category_of(str(code)) for code in codes) if c)


def coverage_code(coverage: dict) -> str | None:
    """The payer-type code of a Coverage (Coverage.type in our payer-type CodeSystem)."""
    for c in (coverage.get("type") or {}).get("coding") or []:
        if c.get("system") == PAYER_TYPE_CS and c.get("code") in PAYER_TYPES:
            return c["code"]
    return None
