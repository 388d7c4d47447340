"""Open Referral HSDS 3.0 -> FHIR directory resources (pure: no database).

Input is the HSDS table form: a dict of table name -> list of row dicts, as in the JSON
dataset (`{"organization": [...], "service": [...], ...}`) or the CSV data package (one
`<table>.csv` per table, read by `read_csv_package`). Tables used: organization, service,
location, service_at_location, language, phone, schedule, taxonomy_term, attribute and the
HSDS 3.1 `service_capacity`. Every rejected row yields a `RowError`; callers import nothing
when there is any (all-or-nothing per file).

Output: transaction entries, each a conditional update on the HSDS id carried as identifier
(`HSDS_ID_SYSTEM|<id>`), so a re-import updates in place. The mapping is in DIRECTORY.md.
"""

from __future__ import annotations

import csv
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mappers import directory_model as dm

TABLES = ("organization", "service", "location", "service_at_location", "language", "phone",
          "schedule", "taxonomy_term", "attribute", "service_capacity")
REQUIRED = {"organization": ("id", "name"), "service": ("id", "organization_id", "name", "status"),
            "location": ("id", "location_type"), "service_at_location": ("id", "service_id",
                                                                         "location_id"),
            "language": ("id",), "phone": ("id", "number"), "schedule": ("id",),
            "taxonomy_term": ("id", "code", "name"), "attribute": ("id", "link_id",
                                                                   "taxonomy_term_id"),
            "service_capacity": ("id", "service_id", "available")}
SERVICE_STATUSES = ("active", "inactive", "defunct", "temporarily closed")
_DAY = {"MO": "mon", "TU": "tue", "WE": "wed", "TH": "thu", "FR": "fri", "SA": "sat", "SU": "sun"}
_NS = uuid.UUID("5b0b7c3e-8f0e-4c5e-9a51-4a3b8b1f0a10")


@dataclass(frozen=True)
class RowError:
    """One rejected row: table, row index, field and why."""

    table: str
    index: int
    field: str
    message: str

    @property
    def expression(self) -> str:
        return f"{self.table}[{self.index}].{self.field}"


@dataclass
class Mapped:
    """The mapping of one HSDS file."""

    entries: list[dict] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    service_ids: list[str] = field(default_factory=list)
    organization_ids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def read_csv_package(folder: Path) -> dict[str, list[dict]]:
    """The tables of an HSDS CSV data package (missing tables are empty)."""
    tables: dict[str, list[dict]] = {}
    for name in TABLES:
        path = folder / f"{name}.csv"
        if path.exists():
            with path.open(newline="", encoding="utf-8") as handle:
                tables[name] = [{k: (v if v != "" else None) for k, v in row.items()}
                                for row in csv.DictReader(handle)]
    return tables


def full_url(kind: str, hsds_id: str) -> str:
    """Deterministic urn:uuid for an HSDS row (so references inside one file resolve)."""
    return f"urn:uuid:{uuid.uuid5(_NS, f'{kind}/{hsds_id}')}"


def _identifier(hsds_id: str) -> list[dict]:
    return [{"system": dm.HSDS_ID_SYSTEM, "value": hsds_id}]


def _entry(res_type: str, hsds_id: str, resource: dict) -> dict:
    return {"fullUrl": full_url(res_type, hsds_id), "resource": resource,
            "request": {"method": "PUT",
                        "url": f"{res_type}?identifier={dm.HSDS_ID_SYSTEM}|{hsds_id}"}}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Mapper:
    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables
        self.out = Mapped()
        self.rows: dict[str, dict[str, dict]] = {}

    def reject(self, table: str, index: int, fld: str, message: str) -> None:
        self.out.errors.append(RowError(table, index, fld, message))

    # -- validation ------------------------------------------------------------------
    def valid_rows(self, table: str) -> dict[str, dict]:
        rows = self.tables.get(table) or []
        if not isinstance(rows, list):
            self.reject(table, 0, "*", f"table '{table}' must be an array of rows")
            return {}
        good: dict[str, dict] = {}
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                self.reject(table, i, "*", "row must be an object")
                continue
            missing = [f for f in REQUIRED[table] if row.get(f) in (None, "")]
            if missing:
                for f in missing:
                    self.reject(table, i, f, f"required field '{f}' is missing")
                continue
            rid = str(row["id"])
            if rid in good:
                self.reject(table, i, "id", f"duplicate id '{rid}' in table '{table}'")
                continue
            if self.check(table, i, row):
                good[rid] = dict(row, _index=i)
        self.rows[table] = good
        return good

    def check(self, table: str, i: int, row: dict) -> bool:
        if table == "location":
            lat, lon = row.get("latitude"), row.get("longitude")
            if lat is not None or lon is not None:
                flat, flon = _number(lat), _number(lon)
                if flat is None or flon is None or not -90 <= flat <= 90 \
                        or not -180 <= flon <= 180:
                    self.reject(table, i, "latitude", f"invalid coordinates ({lat}, {lon})")
                    return False
            if row["location_type"] not in ("physical", "postal", "virtual"):
                self.reject(table, i, "location_type",
                            f"unknown location_type '{row['location_type']}'")
                return False
        if table == "service" and row["status"] not in SERVICE_STATUSES:
            self.reject(table, i, "status", f"unknown service status '{row['status']}'")
            return False
        if table == "service":
            for key in ("minimum_age", "maximum_age"):
                if row.get(key) is not None and (_number(row[key]) is None
                                                 or _number(row[key]) < 0):
                    self.reject(table, i, key, f"{key} must be a non-negative number")
                    return False
        if table == "taxonomy_term" and _term_kind(str(row["code"])) is None:
            self.reject(table, i, "code", f"unknown taxonomy code '{row['code']}' (expected a "
                        "service category, SNOMED referral code, modality or payer type)")
            return False
        if table == "service_capacity" and _number(row["available"]) is None:
            self.reject(table, i, "available", "available must be a number")
            return False
        return True

    def linked(self, table: str, key: str, target: str, target_rows: dict) -> dict[str, list]:
        by_target: dict[str, list] = {}
        for row in self.rows.get(table, {}).values():
            ref = row.get(key)
            if ref is None:
                continue
            if str(ref) not in target_rows:
                self.reject(table, row["_index"], key, f"unknown {target} '{ref}'")
                continue
            by_target.setdefault(str(ref), []).append(row)
        return by_target

    # -- mapping ---------------------------------------------------------------------
    def run(self) -> Mapped:
        orgs = self.valid_rows("organization")
        services = self.valid_rows("service")
        locations = self.valid_rows("location")
        for table in TABLES[3:]:
            self.valid_rows(table)
        for sid, row in list(services.items()):
            if str(row["organization_id"]) not in orgs:
                self.reject("service", row["_index"], "organization_id",
                            f"unknown organization '{row['organization_id']}'")
                del services[sid]
        sal = self.linked("service_at_location", "service_id", "service", services)
        self.linked("service_at_location", "location_id", "location", locations)
        langs = self.linked("language", "service_id", "service", services)
        phones = self.linked("phone", "service_id", "service", services)
        scheds = self.linked("schedule", "service_id", "service", services)
        caps = self.linked("service_capacity", "service_id", "service", services)
        terms = self.rows.get("taxonomy_term", {})
        attrs = self.linked("attribute", "taxonomy_term_id", "taxonomy term", terms)
        codes_by_service: dict[str, list[str]] = {}
        for term_id, rows in attrs.items():
            for attr in rows:
                if str(attr["link_id"]) not in services:
                    if attr.get("link_entity") in (None, "service"):
                        self.reject("attribute", attr["_index"], "link_id",
                                    f"unknown service '{attr['link_id']}'")
                    continue
                codes_by_service.setdefault(str(attr["link_id"]), []).append(
                    str(terms[term_id]["code"]))
        for oid, row in orgs.items():
            self.out.entries.append(_entry("Organization", oid, _organization(row)))
            self.out.organization_ids.append(oid)
        for lid, row in locations.items():
            self.out.entries.append(_entry("Location", lid, _location(row, orgs)))
        for sid, row in services.items():
            codes = codes_by_service.get(sid, [])
            if not any(_term_kind(c) == "category" for c in codes):
                self.reject("service", row["_index"], "id", f"service '{sid}' has no "
                            "recognised category (attribute -> taxonomy_term)")
                continue
            loc_rows = [locations[str(s["location_id"])] for s in sal.get(sid, [])
                        if str(s["location_id"]) in locations]
            resource = _service(row, codes, loc_rows, langs.get(sid, []), phones.get(sid, []),
                                scheds.get(sid, []), caps.get(sid, []))
            self.out.entries.append(_entry("HealthcareService", sid, resource))
            self.out.service_ids.append(sid)
        self.out.counts = {"Organization": len(orgs), "Location": len(locations),
                           "HealthcareService": len(self.out.service_ids)}
        return self.out


def map_dataset(tables: dict[str, Any]) -> Mapped:
    """Map an HSDS dataset (table name -> rows); `errors` lists every rejected row."""
    if not isinstance(tables, dict):
        return Mapped(errors=[RowError("dataset", 0, "*", "an HSDS dataset must be an object "
                                       "of table name -> rows")])
    return _Mapper(tables).run()


def _term_kind(code: str) -> str | None:
    if code in dm.SERVICE_CATEGORIES or code in dm.REFERRAL_CODE_CATEGORY:
        return "category"
    if code in dm.MODALITIES:
        return "modality"
    if code in dm.PAYER_TYPES:
        return "payer"
    return None


def _organization(row: dict) -> dict:
    org: dict[str, Any] = {"resourceType": "Organization", "identifier": _identifier(row["id"]),
                           "active": True, "name": row["name"]}
    telecom = [{"system": s, "value": row[k]} for s, k in (("url", "website"), ("email", "email"))
               if row.get(k)]
    if telecom:
        org["telecom"] = telecom
    return org


def _location(row: dict, orgs: dict) -> dict:
    loc: dict[str, Any] = {"resourceType": "Location", "identifier": _identifier(row["id"]),
                           "status": "active", "mode": "instance",
                           "name": row.get("name") or f"Location {row['id']}"}
    if row["location_type"] == "virtual":
        loc["physicalType"] = dm.coding("http://terminology.hl7.org/CodeSystem/location-physical-type",
                                        "vi", "Virtual")
    lat, lon = _number(row.get("latitude")), _number(row.get("longitude"))
    if lat is not None and lon is not None:
        loc["position"] = {"latitude": lat, "longitude": lon}
    if row.get("organization_id") and str(row["organization_id"]) in orgs:
        loc["managingOrganization"] = {"reference": full_url("Organization",
                                                             str(row["organization_id"]))}
    address = {k: row[src] for k, src in (("city", "city"), ("state", "state_province"),
                                          ("postalCode", "postal_code")) if row.get(src)}
    if row.get("address_1"):
        address["line"] = [row["address_1"]]
    if address:
        loc["address"] = address
    return loc


def _service(row: dict, codes: list[str], locations: list[dict], langs: list[dict],
             phones: list[dict], schedules: list[dict], capacities: list[dict]) -> dict:
    cats = sorted({c if c in dm.SERVICE_CATEGORIES else dm.REFERRAL_CODE_CATEGORY[c]
                   for c in codes if _term_kind(c) == "category"})
    snomed = sorted({c for c in codes if c in dm.REFERRAL_CODE_CATEGORY}
                    | {dm.CATEGORY_REFERRAL_CODE[c] for c in cats})
    modalities = {c for c in codes if _term_kind(c) == "modality"}
    modalities |= {"telehealth" if loc["location_type"] == "virtual" else "in-person"
                   for loc in locations}
    if str(row.get("interpretation_services") or "").strip():
        modalities.add("interpreter")
    svc: dict[str, Any] = {
        "resourceType": "HealthcareService", "identifier": _identifier(row["id"]),
        "active": row["status"] == "active",
        "providedBy": {"reference": full_url("Organization", str(row["organization_id"]))},
        "category": [dm.coding(dm.SERVICE_CATEGORY_CS, c, dm.SERVICE_CATEGORIES[c])
                     for c in cats],
        "type": [dm.coding(dm.SNOMED, c, dm.REFERRAL_DISPLAY.get(c)) for c in snomed],
        "name": row["name"]}
    if locations:
        svc["location"] = [{"reference": full_url("Location", loc["id"])} for loc in locations]
    if row.get("description"):
        svc["comment"] = str(row["description"])[:1000]
    if phones or row.get("email") or row.get("url"):
        svc["telecom"] = ([{"system": "phone", "value": p["number"]} for p in phones]
                          + [{"system": s, "value": row[k]} for s, k in (("email", "email"),
                                                                         ("url", "url"))
                             if row.get(k)])
    if modalities:
        svc["characteristic"] = [dm.coding(dm.MODALITY_CS, m, dm.MODALITIES[m])
                                 for m in sorted(modalities)]
    lang_codes = sorted({str(lang["code"]).lower() for lang in langs if lang.get("code")})
    if lang_codes:
        svc["communication"] = [dm.coding(dm.BCP47, c) for c in lang_codes]
    if row.get("eligibility_description"):
        svc["eligibility"] = [{"comment": str(row["eligibility_description"])}]
    if row.get("application_process"):
        svc["referralMethod"] = [{"text": str(row["application_process"])[:500]}]
    times = _available_times(schedules)
    if times:
        svc["availableTime"] = times
    extensions = _service_extensions(row, codes, capacities)
    if extensions:
        svc["extension"] = extensions
    return svc


def _service_extensions(row: dict, codes: list[str], capacities: list[dict]) -> list[dict]:
    out: list[dict] = []
    low, high = _number(row.get("minimum_age")), _number(row.get("maximum_age"))
    if low is not None or high is not None:
        out.append(dm.age_extension(low, high))
    out += [dm.coverage_extension(c) for c in sorted({c for c in codes if c in dm.PAYER_TYPES})]
    if capacities:
        cap = max(capacities, key=lambda c: str(c.get("updated") or ""))
        available = _number(cap["available"]) or 0
        status = "capacity" if available > 0 else "no-capacity"
        notes = cap.get("description")
        out.append(dm.capacity_extension(status, str(notes) if notes else None))
        if dm.parse_day(cap.get("updated")):
            out.append({"url": dm.EXT_CAPACITY_CONFIRMED,
                        "valueDateTime": str(cap["updated"])[:10]})
    return out


def _available_times(schedules: list[dict]) -> list[dict]:
    out = []
    for sched in schedules:
        days = [_DAY[d.strip().upper()] for d in str(sched.get("byday") or "").split(",")
                if d.strip().upper() in _DAY]
        if not days:
            continue
        opens, closes = sched.get("opens_at"), sched.get("closes_at")
        slot: dict[str, Any] = {"daysOfWeek": days}
        if (opens in (None, "00:00", "00:00:00")
                and closes in (None, "23:59", "23:59:59", "24:00")):
            slot["allDay"] = True
        else:
            slot["availableStartTime"] = _time(opens)
            slot["availableEndTime"] = _time(closes)
        out.append(slot)
    return out


def _time(value: Any) -> str:
    text = str(value or "00:00")
    return text if text.count(":") == 2 else f"{text}:00"
