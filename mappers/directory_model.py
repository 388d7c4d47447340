"""The provider-directory model on standard R4 resources (documented in mappers/DIRECTORY.md).

A directory entry is a `HealthcareService` (what is offered, by whom, to whom) with its
`Location`s (where; `position` gives coordinates), its `Organization` (`providedBy`), the
`Endpoint`s a direct referral is delivered to and the `PractitionerRole`s that staff it.

What R4 has no element for is carried in extensions we publish (StructureDefinitions in
`mappers/directory_definitions/`), plus the Gravity capacity-status extension:

  capacity      SDOHCC-ExtensionHealthcareServiceCapacityStatus (capacityStatus, capacityNotes)
  wait          EXT_WAIT_DAYS            valueInteger: typical days from referral to first visit
  confirmed     EXT_CAPACITY_CONFIRMED   valueDateTime: when capacity and wait were last confirmed
  coverage      EXT_ACCEPTED_COVERAGE    valueCodeableConcept (PAYER_TYPE_CS), repeating
  age           EXT_AGE_RANGE            valueRange in years (UCUM `a`)
  category      `category` coding in SERVICE_CATEGORY_CS; `type` = SNOMED referral codes
  modality      `characteristic` coding in MODALITY_CS: in-person | telehealth | interpreter
  language      `communication` (BCP-47, urn:ietf:bcp:47)
  24/7          `availableTime` with allDay=true covering all seven days
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

BASE = "http://mh-referral.example.org/fhir"
SD_BASE = f"{BASE}/StructureDefinition"
EXT_WAIT_DAYS = f"{SD_BASE}/directory-wait-days"
EXT_CAPACITY_CONFIRMED = f"{SD_BASE}/directory-capacity-confirmed"
EXT_ACCEPTED_COVERAGE = f"{SD_BASE}/directory-accepted-coverage"
EXT_AGE_RANGE = f"{SD_BASE}/directory-age-range"
SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare"
EXT_CAPACITY = f"{SDOHCC}/StructureDefinition/SDOHCC-ExtensionHealthcareServiceCapacityStatus"
CAPACITY_CS = f"{SDOHCC}/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
CAPACITY_CODES = {"capacity": "Has Capacity", "no-capacity": "No Capacity",
                  "waitlist": "No Capacity - Has Waitlist",
                  "additional-assessment-required": "Additional Assessment Required"}
SERVICE_CATEGORY_CS = f"{BASE}/CodeSystem/mh-service-category"
MODALITY_CS = f"{BASE}/CodeSystem/service-modality"
PAYER_TYPE_CS = f"{BASE}/CodeSystem/payer-type"
HSDS_ID_SYSTEM = f"{BASE}/sid/hsds-id"
SNOMED = "http://snomed.info/sct"
BCP47 = "urn:ietf:bcp:47"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

SERVICE_CATEGORIES: dict[str, str] = {
    "crisis": "Crisis services",
    "psychiatry": "Psychiatry",
    "therapy": "Therapy / counseling",
    "collaborative-care": "Collaborative care / mental-health team",
    "substance-use": "Substance use treatment",
    "peer-support": "Peer support",
    "community": "Community organization",
}
MODALITIES = {"in-person": "In person", "telehealth": "Telehealth (video/phone)",
              "interpreter": "Interpreter services available"}
PAYER_TYPES = {"medicaid": "Medicaid", "medicare": "Medicare", "private": "Private insurance",
               "sliding-fee": "Sliding fee scale", "free": "Free of charge",
               "uninsured": "Serves uninsured patients"}

# SNOMED CT referral codes (screening.md 6.1) -> the category that fulfils them.
REFERRAL_CODE_CATEGORY: dict[str, str] = {
    "183524004": "psychiatry", "308477009": "psychiatry", "306291008": "psychiatry",
    "306136006": "psychiatry", "306293006": "psychiatry",
    "306226009": "therapy", "306227000": "therapy", "306252003": "therapy",
    "308459004": "therapy", "306343005": "therapy", "428471000124108": "therapy",
    "428481000124106": "therapy", "710914003": "therapy",
    "390866009": "collaborative-care", "183583007": "collaborative-care",
    "768835002": "collaborative-care",
    "183866009": "crisis",
    "401266006": "substance-use",
    "461481000124109": "peer-support", "711281004": "peer-support",
}
CATEGORY_REFERRAL_CODE = {"psychiatry": "183524004", "therapy": "306226009",
                          "collaborative-care": "390866009", "crisis": "183866009",
                          "substance-use": "401266006", "peer-support": "461481000124109",
                          "community": "711281004"}
REFERRAL_DISPLAY = {
    "183524004": "Referral to psychiatry service",
    "306226009": "Referral to mental health counseling service",
    "390866009": "Referral to mental health team", "183866009": "Referral to emergency clinic",
    "401266006": "Referral to drug abuse counselor",
    "461481000124109": "Referral to peer support", "711281004": "Referral to support group",
}
# Recommended level of care (mappers/care_recommendation.py care-step codes) -> categories.
LEVEL_CATEGORIES: dict[str, frozenset[str]] = {
    "safety": frozenset({"crisis", "psychiatry", "collaborative-care"}),
    "specialist": frozenset({"psychiatry", "collaborative-care", "crisis"}),
    "high-intensity": frozenset({"therapy", "collaborative-care", "psychiatry"}),
    "therapy": frozenset({"therapy", "collaborative-care"}),
    "low-intensity": frozenset({"peer-support", "community", "therapy"}),
}

DEFINITIONS_DIR = Path(__file__).resolve().parent / "directory_definitions"


def definitions() -> list[dict]:
    """The StructureDefinitions and CodeSystems of the directory model (seeded on start)."""
    return [json.loads(p.read_text()) for p in sorted(DEFINITIONS_DIR.glob("*.json"))]


# -- reading a HealthcareService ---------------------------------------------------------
@dataclass(frozen=True)
class ServiceFacts:
    """What matching needs from one HealthcareService, read once."""

    service_id: str
    name: str
    active: bool
    organization: str | None
    location_ids: tuple[str, ...]
    categories: frozenset[str]
    referral_codes: frozenset[str]
    languages: frozenset[str]
    modalities: frozenset[str]
    coverage: frozenset[str]
    age_min: float | None
    age_max: float | None
    capacity: str | None
    capacity_notes: str | None
    wait_days: int | None
    confirmed: date | None
    always_open: bool
    has_endpoint: bool
    positions: tuple[tuple[float, float], ...] = field(default=())


def _codes(concepts: Any, system: str) -> set[str]:
    out: set[str] = set()
    for concept in concepts or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == system and isinstance(coding.get("code"), str):
                out.add(coding["code"])
    return out


def extension_values(resource: dict, url: str) -> list[dict]:
    """Every extension of `resource` with this url."""
    return [e for e in resource.get("extension") or [] if e.get("url") == url]


def capacity_of(service: dict) -> tuple[str | None, str | None]:
    """(capacityStatus code, capacityNotes) of the Gravity capacity extension."""
    for ext in extension_values(service, EXT_CAPACITY):
        status = notes = None
        for sub in ext.get("extension") or []:
            if sub.get("url") == "capacityStatus":
                codes = _codes([sub.get("valueCodeableConcept")], CAPACITY_CS)
                status = next(iter(sorted(codes)), None)
            elif sub.get("url") == "capacityNotes":
                notes = sub.get("valueString")
        return status, notes
    return None, None


def parse_day(value: Any) -> date | None:
    """The date part of a FHIR date/dateTime string (None when absent or malformed)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def _always_open(service: dict) -> bool:
    days: set[str] = set()
    for slot in service.get("availableTime") or []:
        if slot.get("allDay") is True:
            days.update(slot.get("daysOfWeek") or [])
    return days >= set(DAYS)


def _age_range(service: dict) -> tuple[float | None, float | None]:
    for ext in extension_values(service, EXT_AGE_RANGE):
        rng = ext.get("valueRange") or {}
        return (rng.get("low") or {}).get("value"), (rng.get("high") or {}).get("value")
    return None, None


def service_facts(service: dict, positions: tuple[tuple[float, float], ...] = ()
                  ) -> ServiceFacts:
    """Matching facts of a HealthcareService (`positions`: its Locations' coordinates)."""
    status, notes = capacity_of(service)
    wait = next((e.get("valueInteger") for e in extension_values(service, EXT_WAIT_DAYS)), None)
    confirmed = next((parse_day(e.get("valueDateTime"))
                      for e in extension_values(service, EXT_CAPACITY_CONFIRMED)), None)
    coverage = set()
    for ext in extension_values(service, EXT_ACCEPTED_COVERAGE):
        coverage |= _codes([ext.get("valueCodeableConcept")], PAYER_TYPE_CS)
    age_min, age_max = _age_range(service)
    types = _codes(service.get("type"), SNOMED)
    categories = _codes(service.get("category"), SERVICE_CATEGORY_CS)
    categories |= {REFERRAL_CODE_CATEGORY[c] for c in types if c in REFERRAL_CODE_CATEGORY}
    locs = tuple(str(r.get("reference", "")).split("/", 1)[1]
                 for r in service.get("location") or []
                 if str(r.get("reference", "")).startswith("Location/"))
    return ServiceFacts(
        service_id=service.get("id", ""), name=service.get("name") or "",
        active=service.get("active") is not False,
        organization=(service.get("providedBy") or {}).get("reference"),
        location_ids=locs, categories=frozenset(categories), referral_codes=frozenset(types),
        languages=frozenset(c.lower() for c in _codes(service.get("communication"), BCP47)),
        modalities=frozenset(_codes(service.get("characteristic"), MODALITY_CS)),
        coverage=frozenset(coverage), age_min=age_min, age_max=age_max,
        capacity=status, capacity_notes=notes,
        wait_days=wait if isinstance(wait, int) else None, confirmed=confirmed,
        always_open=_always_open(service), has_endpoint=bool(service.get("endpoint")),
        positions=positions)


def location_position(location: dict) -> tuple[float, float] | None:
    """(latitude, longitude) of a Location, when it has a valid position."""
    pos = location.get("position") or {}
    lat, lon = pos.get("latitude"), pos.get("longitude")
    if isinstance(lat, int | float) and isinstance(lon, int | float) \
            and -90 <= lat <= 90 and -180 <= lon <= 180:
        return float(lat), float(lon)
    return None


# -- writing -----------------------------------------------------------------------------
def coding(system: str, code: str, display: str | None = None) -> dict:
    """A CodeableConcept with one coding."""
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c]}


def capacity_extension(status: str, notes: str | None = None) -> dict:
    """The Gravity capacity-status extension."""
    subs: list[dict] = [{"url": "capacityStatus", "valueCodeableConcept": coding(
        CAPACITY_CS, status, CAPACITY_CODES[status])}]
    if notes:
        subs.append({"url": "capacityNotes", "valueString": notes})
    return {"url": EXT_CAPACITY, "extension": subs}


def set_capacity(service: dict, status: str, notes: str | None, wait_days: int | None,
                 confirmed: datetime | None = None) -> dict:
    """Replace capacity, wait and the confirmed-at date on a HealthcareService (in place)."""
    mine = {EXT_CAPACITY, EXT_WAIT_DAYS, EXT_CAPACITY_CONFIRMED}
    exts = [e for e in service.get("extension") or [] if e.get("url") not in mine]
    exts.append(capacity_extension(status, notes))
    if wait_days is not None:
        exts.append({"url": EXT_WAIT_DAYS, "valueInteger": wait_days})
    when = (confirmed or datetime.now(UTC)).replace(microsecond=0)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    exts.append({"url": EXT_CAPACITY_CONFIRMED,
                 "valueDateTime": when.isoformat().replace("+00:00", "Z")})
    service["extension"] = exts
    return service


def age_extension(low: float | None, high: float | None) -> dict:
    """The age-range extension (years)."""
    rng: dict[str, Any] = {}
    for key, value in (("low", low), ("high", high)):
        if value is not None:
            rng[key] = {"value": value, "unit": "a", "system": "http://unitsofmeasure.org",
                        "code": "a"}
    return {"url": EXT_AGE_RANGE, "valueRange": rng}


def coverage_extension(code: str) -> dict:
    """One accepted-coverage extension."""
    return {"url": EXT_ACCEPTED_COVERAGE,
            "valueCodeableConcept": coding(PAYER_TYPE_CS, code, PAYER_TYPES[code])}


def always_open_time() -> list[dict]:
    """availableTime meaning 24/7."""
    return [{"daysOfWeek": list(DAYS), "allDay": True}]
