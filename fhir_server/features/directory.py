"""Provider directory: `$match` (ServiceRequest instance, HealthcareService type level),
`HealthcareService/[id]/$update-capacity` and the directory model's published definitions
(rules in mappers/DIRECTORY.md). The ranking itself is `fhir_server.matching`."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.features.common import access_of, patient_flags
from fhir_server.features.screening import care_recommendation
from fhir_server.interactions import crud
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.matching import candidates
from fhir_server.matching import criteria as C
from fhir_server.matching.ranking import Candidate, Criteria, rank
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.workflow.canonical import CANONICAL_BASE
from mappers import directory_model as dm
from mappers.care_recommendation import active_safety_flags
from mappers.directory_model import definitions
from profiles.loader import registry as profile_registry

OPERATION_BASE = f"{CANONICAL_BASE}/OperationDefinition"


def _match(call, res_type, res_id, params, body):  # type: ignore[no-untyped-def]
    if (res_type == "ServiceRequest") != (res_id is not None):
        raise FhirError(400, "not-supported", "$match runs on ServiceRequest/[id] or on the "
                        "HealthcareService type with Parameters", f"{res_type}")
    if res_type == "ServiceRequest":
        return match_service_request(call, res_type, res_id, params, body)
    return match_parameters(call, res_type, res_id, params, body)


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the directory operations and seed the extension definitions."""
    registry.register(Operation(
        name="match", handler=_match,
        types=frozenset({"ServiceRequest", "HealthcareService"}),
        type_level=True, instance_level=True, methods=frozenset({"GET", "POST"}),
        definition=f"{OPERATION_BASE}/match", reads="parameters",
        documentation="Rank directory services for a referral: hard filters, then score "
                      "(ServiceRequest/[id]/$match or HealthcareService/$match with Parameters)"))
    registry.register(Operation(
        name="update-capacity", handler=update_capacity,
        types=frozenset({"HealthcareService"}), instance_level=True,
        methods=frozenset({"POST"}),
        definition=f"{OPERATION_BASE}/HealthcareService-update-capacity",
        documentation="The providing organization sets capacity status, notes and typical wait",
        affects_state=True))
    services.seed_providers.append(definitions)
    profile_registry().add(definitions())  # the validator knows the directory's extensions
    services.phases.add("after-write", "directory.match-caches", _after_write, order=600)


def _after_write(event: WriteEvent) -> None:
    """Drop the $match caches that depend on the written type."""
    candidates.invalidate(event.res_type)


# -- $match and $update-capacity -------------------------------------------------------
EXT_MATCH_REASON = f"{dm.SD_BASE}/match-reason"
EXT_MATCH_FAILED = f"{dm.SD_BASE}/match-failed"
EXT_NEAR_MISS = f"{dm.SD_BASE}/match-near-miss"  # near misses are not `include`d resources


def _base_criteria(call: Call) -> Criteria:
    return Criteria(stale_days=call.settings.capacity_stale_days, today=date.today())


def match_parameters(call: Call, res_type: str | None, res_id: str | None,
                     params: list[tuple[str, str]], body: Any) -> Result:
    """POST HealthcareService/$match: criteria given as Parameters (referral not stored)."""
    if body is None:
        raise FhirError(400, "required", "HealthcareService/$match needs a Parameters body",
                        "Parameters")
    crit = C.parse_parameters(body, _base_criteria(call))
    return _run(call, crit, [])


def match_service_request(call: Call, res_type: str | None, res_id: str | None,
                          params: list[tuple[str, str]], body: Any) -> Result:
    """POST ServiceRequest/[id]/$match: criteria from the referral, its patient, their flags,
    coverage and screening; a Parameters body may add or override criteria."""
    notes: list[Issue] = []
    level = _recommended_level(call, res_id or "", notes)
    with call.db.read() as conn:
        repo = Repository(conn)
        sr = _current(repo, "ServiceRequest", res_id or "")
        crit = _from_service_request(conn, repo, sr, _base_criteria(call), level, notes)
    if body is not None:
        crit = C.parse_parameters(body, crit)
    else:
        C.check_consistent(crit, explicit=False)
    return _run(call, crit, notes)


def _current(repo: Repository, res_type: str, res_id: str) -> dict:
    stored = repo.read(res_type, res_id)
    if stored is None:
        raise FhirError(404, "not-found", f"Resource {res_type}/{res_id} is not known")
    if stored.deleted:
        raise FhirError(410, "deleted", f"Resource {res_type}/{res_id} has been deleted")
    return stored.resource()


def _read_ref(repo: Repository, ref: Any) -> dict | None:
    text = ref.get("reference") if isinstance(ref, dict) else None
    if not isinstance(text, str) or text.count("/") != 1:
        return None
    stored = repo.read(*text.split("/"))
    return stored.resource() if stored is not None and not stored.deleted else None


def _recommended_level(call: Call, sr_id: str, notes: list[Issue]) -> str | None:
    """The level of care $recommend-care gives the referral's patient (None if no referral
    level follows from the screening)."""
    with call.db.read() as conn:
        stored = Repository(conn).read("ServiceRequest", sr_id)
        body = stored.resource() if stored is not None and not stored.deleted else {}
    ref = (body.get("subject") or {}).get("reference") or ""
    if not ref.startswith("Patient/"):
        return None
    try:
        params = care_recommendation(call, ref.split("/", 1)[1])
    except FhirError:
        return None
    for p in (params or {}).get("parameter") or []:
        if p.get("name") == "level-of-care":
            level = (p.get("valueCoding") or {}).get("code")
            if level in dm.LEVEL_CATEGORIES:
                notes.append(Issue("information", "informational",
                                   f"level of care from screening: {level}"))
                return level
    return None


def _from_service_request(conn: Connection, repo: Repository, sr: dict, base: Criteria,
                          level: str | None, notes: list[Issue]) -> Criteria:

    categories = C.sr_categories(sr)
    if not categories:
        raise FhirError(422, "processing", "ServiceRequest.code has no SNOMED CT referral code "
                        "the directory knows", "ServiceRequest.code")
    changes: dict[str, Any] = {"categories": categories}
    if level and not categories & dm.LEVEL_CATEGORIES[level]:
        notes.append(Issue("warning", "informational", f"screening level of care '{level}' "
                           f"does not cover the requested {sorted(categories)}; ignored"))
    elif level:
        changes["level"] = level
    if sr.get("priority") == "stat":
        changes.update(crisis=True, crisis_reason="priority stat")
    patient = _read_ref(repo, sr.get("subject")) or {}
    if active_safety_flags(patient_flags(conn, f"Patient/{patient['id']}") if patient else []):
        changes.update(crisis=True, crisis_reason="active safety flag")
    born = dm.parse_day(patient.get("birthDate"))
    if born:
        changes["age"] = C.age_on(born, base.today)
    changes["language"] = C.patient_language(patient)
    changes["point"] = C.patient_point(patient)
    for ref in sr.get("insurance") or []:
        code = C.coverage_code(_read_ref(repo, ref) or {})
        if code:
            changes["coverage"] = code
            break
    return dataclasses.replace(base, **changes)


def _run(call: Call, crit: Criteria, notes: list[Issue]) -> Result:
    key = call.db.url.render_as_string(hide_password=True)
    with call.db.read() as conn:
        snap = candidates.directory(conn, key)
        stats = candidates.provider_stats(conn, key)
        pool = snap.for_categories(crit.relevant_categories())
        shown, total, misses = rank(pool, crit, stats)
        stored = Repository(conn).read_many(
            [("HealthcareService", c.facts.service_id) for c in shown + misses])
    entries = [_entry(call, c, stored, "match") for c in shown]
    entries += [_entry(call, c, stored, None) for c in misses]
    entries.append({"resource": _outcome(crit, notes), "search": {"mode": "outcome"}})
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": total,
              "entry": [e for e in entries if e]}
    return Result(200, resource=bundle)


def _entry(call: Call, cand: Candidate, stored: dict, mode: str | None) -> dict | None:
    """A match (search.mode = match, with its score), or a near miss: no search.mode (it is
    neither a match nor an `_include`d resource), marked by the match-near-miss extension."""
    row = stored.get(("HealthcareService", cand.facts.service_id))
    if row is None or row.deleted:
        return None
    exts = [{"url": EXT_MATCH_REASON, "valueString": r} for r in cand.reasons]
    exts += [{"url": EXT_MATCH_FAILED, "valueString": f} for f in cand.failed]
    if mode is None:
        exts.insert(0, {"url": EXT_NEAR_MISS, "valueBoolean": True})
    search: dict[str, Any] = {"extension": exts}
    if mode == "match":
        search = {"mode": mode, **search, "score": cand.score}
    return {"fullUrl": f"{call.base_url}/HealthcareService/{cand.facts.service_id}",
            "resource": row.resource(), "search": search}


def _outcome(crit: Criteria, notes: list[Issue]) -> dict:
    used = [f"categories={','.join(sorted(crit.relevant_categories()))}"]
    for name, value in (("level-of-care", crit.level), ("age", crit.age),
                        ("language", crit.language), ("coverage", crit.coverage),
                        ("modality", crit.modality), ("near", crit.point)):
        if value is not None:
            used.append(f"{name}={value}")
    if crit.point is not None:
        used.append(f"radius={crit.radius_km:g}km")
    if crit.crisis:
        used.append(f"crisis routing ({crit.crisis_reason}): 24/7 crisis services only")
    issues = [Issue("information", "informational", "criteria: " + "; ".join(used))] + notes
    return {"resourceType": "OperationOutcome", "issue": [i.to_fhir() for i in issues]}


# -- capacity updates ---------------------------------------------------------------------
def update_capacity(call: Call, res_type: str | None, res_id: str | None,
                    params: list[tuple[str, str]], body: Any) -> Result:
    """POST HealthcareService/[id]/$update-capacity: capacity-status (required),
    capacity-notes, wait-days, confirmed. Only the service's own organization may call it."""
    status, notes, wait, confirmed = _capacity_params(body)
    with call.write() as conn:
        repo = Repository(conn)
        service = _current(repo, "HealthcareService", res_id or "")
        check_owner(call, service)
        dm.set_capacity(service, status, notes, wait, confirmed)
        return crud.store_update(conn, call, "HealthcareService", res_id or "", service,
                                 None, "POST")


def check_owner(call: Call, service: dict) -> None:
    """403 unless the caller acts for the service's providedBy organization (or is
    unrestricted / an administrator)."""
    access = access_of(call)
    if access.unrestricted or access.is_admin:
        return
    owner = (service.get("providedBy") or {}).get("reference")
    if not access.organization or access.organization != owner:
        raise FhirError(403, "forbidden", f"Only {owner or 'the providing organization'} may "
                        "update the capacity of this service", "HealthcareService.providedBy")


def _capacity_params(body: Any) -> tuple[str, str | None, int | None, datetime | None]:
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise FhirError(400, "invalid", "$update-capacity takes a Parameters resource",
                        "Parameters")
    values: dict[str, Any] = {}
    issues = []
    for i, p in enumerate(body.get("parameter") or []):
        where, name, value = f"Parameters.parameter[{i}]", p.get("name"), C._value(p)
        if name == "capacity-status" and value not in dm.CAPACITY_CODES:
            issues.append(C._bad(where, f"capacity-status must be one of "
                                 f"{', '.join(dm.CAPACITY_CODES)}", "value"))
        elif name == "wait-days" and (not isinstance(value, int) or isinstance(value, bool)
                                      or value < 0):
            issues.append(C._bad(where, "wait-days must be a non-negative integer", "value"))
        elif name == "confirmed" and _instant(value) is None:
            issues.append(C._bad(where, "confirmed must be a dateTime with a time zone",
                                 "value"))
        elif name not in ("capacity-status", "capacity-notes", "wait-days", "confirmed"):
            issues.append(C._bad(f"{where}.name", f"unknown parameter '{name}'",
                                 "not-supported"))
        values[name] = value
    if "capacity-status" not in values and not issues:
        issues.append(C._bad("Parameters", "capacity-status is required", "required"))
    if issues:
        raise FhirError(400, issues[0].code, issues[0].diagnostics, issues=issues)
    confirmed = _instant(values["confirmed"]) if "confirmed" in values else None
    return values["capacity-status"], values.get("capacity-notes"), values.get("wait-days"), \
        confirmed


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else None
