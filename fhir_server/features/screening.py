"""PHQ-9 / GAD-7 screening wired into the QuestionnaireResponse write path: scoring,
Observations in the same transaction, the item-9 safety Flag and risk Task, the referral
priority floor, and the $extract / $recommend-care operations (rules: mappers/SCREENING.md)."""

from __future__ import annotations

from typing import Any

from fhir_server.errors import FhirError, Issue
from fhir_server.features.common import patient_flags
from fhir_server.interactions.bundles import transaction_in
from fhir_server.interactions.caller_view import CallerView, system_call
from fhir_server.interactions.context import Call, Services
from fhir_server.interactions.operations import Operation, OperationRegistry
from fhir_server.interactions.phases import WriteEvent
from fhir_server.interactions.results import Result
from fhir_server.storage.db import Connection
from fhir_server.storage.repository import Repository
from fhir_server.workflow.canonical import CANONICAL_BASE
from fhir_server.workflow.task_rules import is_referral_task
from mappers import screening_extract as extract
from mappers.care_recommendation import (
    active_safety_flags,
    recommend_care,
    referral_priority_floor,
)
from mappers.screening import ScreeningResult, raise_if_invalid, score_response
from profiles.questionnaires import get_questionnaire, load_questionnaires

SCORED_STATUSES = ("completed", "amended")
PRIORITY_OVERRIDE_EXT = f"{CANONICAL_BASE}/StructureDefinition/safety-priority-override-reason"
_RESULT_KEY = "screening_result"


def install(services: Services, registry: OperationRegistry) -> None:
    """Register the screening hooks, operations and shipped Questionnaires."""
    services.phases.add("prepare", "screening.referral-priority-floor", _priority_floor,
                        order=200, types={"ServiceRequest", "Task"})
    services.phases.add("check", "screening.score", _score, order=200,
                        types={"QuestionnaireResponse"})
    services.phases.add("after-write", "screening.derived-resources", _after_write, order=400,
                        types={"QuestionnaireResponse"})
    services.seed_providers.append(load_questionnaires)
    registry.register(Operation(
        name="extract", handler=_extract, types=frozenset({"QuestionnaireResponse"}),
        type_level=True, instance_level=True, methods=frozenset({"GET", "POST"}),
        definition="http://hl7.org/fhir/uv/sdc/OperationDefinition/QuestionnaireResponse-extract",
        documentation="Observations a PHQ-9/GAD-7/PHQ-2/GAD-2 response yields (not stored)"))
    registry.register(Operation(
        name="recommend-care", handler=_recommend_care, types=frozenset({"Patient"}),
        instance_level=True, methods=frozenset({"GET", "POST"}), reads="query",
        definition=f"{CANONICAL_BASE}/OperationDefinition/Patient-recommend-care",
        documentation="Stepped-care recommendation from the latest screening scores "
                      "(requires clinical sign-off)"))


# -- lookups ---------------------------------------------------------------------------
def questionnaire_for(conn: Connection, qr: dict) -> dict | None:
    """The Questionnaire a response answers: stored on this server, else shipped."""
    canonical = qr.get("questionnaire")
    if not isinstance(canonical, str) or not canonical:
        return None
    url, _, version = canonical.partition("|")
    params = [("url", url)] + ([("version", version)] if version else [])
    stored = Repository(conn).search_resources("Questionnaire", params, limit=1)
    return stored[0] if stored else get_questionnaire(canonical)


def _patient_ref(resource: dict, key: str = "subject") -> str | None:
    ref = (resource.get(key) or {}).get("reference")
    return ref if isinstance(ref, str) and ref.startswith("Patient/") else None


def _organization_of(conn: Connection, ref: Any) -> str | None:
    """The Organization an Organization or PractitionerRole reference stands for."""
    if not isinstance(ref, str):
        return None
    if ref.startswith("Organization/"):
        return ref
    if ref.startswith("PractitionerRole/"):
        role = Repository(conn).read("PractitionerRole", ref.split("/", 1)[1])
        if role is not None and not role.deleted:
            org = (role.resource().get("organization") or {}).get("reference")
            return org if isinstance(org, str) else None
    return None


def _requester_org(conn: Connection, qr: dict) -> str | None:
    """Who must assess the risk: the organization of the response's author, else (a patient
    answering at home) the organization that requested the care the response is based on
    (`basedOn` ServiceRequest's requester)."""
    found = _organization_of(conn, (qr.get("author") or {}).get("reference"))
    if found:
        return found
    for based in qr.get("basedOn") or []:
        ref = based.get("reference") if isinstance(based, dict) else None
        if isinstance(ref, str) and ref.startswith("ServiceRequest/"):
            request = Repository(conn).read("ServiceRequest", ref.split("/", 1)[1])
            if request is not None and not request.deleted:
                found = _organization_of(conn, (request.resource().get("requester") or {})
                                         .get("reference"))
                if found:
                    return found
    return None


# -- write path ------------------------------------------------------------------------
def _score(event: WriteEvent) -> list[Issue]:
    """Score a completed PHQ-9/GAD-7/PHQ-2/GAD-2 response; refuse an invalid one. The result
    is carried to after-write, which stores what it derives."""
    new = event.resource
    if new is None or new.get("status") not in SCORED_STATUSES:
        return []
    result = score_response(questionnaire_for(event.conn, new), new)
    raise_if_invalid(result.issues)
    event.carried[_RESULT_KEY] = result
    return result.outcome_issues()


def _priority_floor(event: WriteEvent) -> dict | None:
    """The safety floor on a new referral's priority: the ServiceRequest and the referral
    Task alike (the stalled-referral clock reads the Task's priority)."""
    request = event.resource
    if request is None or event.previous is not None:
        return None
    res_type = request["resourceType"]
    if res_type == "Task" and not is_referral_task(request):
        return None
    flags = patient_flags(event.conn, _patient_ref(request, "subject" if res_type ==
                                                   "ServiceRequest" else "for"))
    if not active_safety_flags(flags):
        return None
    override = next((e.get("valueString") for e in request.get("extension") or []
                     if e.get("url") == PRIORITY_OVERRIDE_EXT), None)
    try:
        decision = referral_priority_floor(request.get("priority"), flags=flags,
                                           override_reason=override)
    except ValueError:  # not a request priority: the check phase (profiles) refuses it
        return None
    request["priority"] = decision.priority
    event.issues.append(Issue("information", "informational", decision.reason,
                              [f"{res_type}.priority"]))
    return request


def _after_write(event: WriteEvent) -> None:
    conn, call, new, previous = event.conn, event.call, event.stored, event.previous_stored
    if new is None or new.body is None:
        return
    result: ScreeningResult | None = event.carried.pop(_RESULT_KEY, None)
    if result is None or result.status not in ("complete", "incomplete"):
        return
    qr = new.resource()
    qr_ref = f"QuestionnaireResponse/{new.res_id}"
    entries = extract.extract_observations(qr, result, qr_reference=qr_ref)
    # A response written for the first time has nothing derived from it yet.
    derived = _derived_observations(conn, qr_ref) if previous is not None else []
    if derived:
        entries = extract.supersede(derived, entries)
    flags = patient_flags(conn, _patient_ref(qr))
    derived_refs = {f"Observation/{o['id']}" for o in derived}
    own_flags = [f for f in flags if _flag_from(f, derived_refs)]
    if own_flags:
        entries += extract.supersede_safety_flags(own_flags, result)
    if result.safety_flag and not active_safety_flags(flags):
        item9 = extract.item9_reference(entries) or _item9_stored(derived)
        if item9:
            entries += extract.safety_resources(qr, result, item9, _requester_org(conn, qr))
    if entries:
        transaction_in(conn, system_call(call), entries)


def _derived_observations(conn: Connection, qr_ref: str) -> list[dict]:
    return Repository(conn).search_resources("Observation", [("derived-from", qr_ref)])


def _flag_from(flag: dict, observation_refs: set[str]) -> bool:
    """True when the Flag was raised from one of these Observations (its flag-detail)."""
    return any(ext.get("url") == extract.FLAG_DETAIL_URL
               and (ext.get("valueReference") or {}).get("reference") in observation_refs
               for ext in flag.get("extension") or [])


def _item9_stored(observations: list[dict]) -> str | None:
    for obs in observations:
        codes = [c.get("code") for c in (obs.get("code") or {}).get("coding") or []]
        if "44260-8" in codes and obs.get("status") != "entered-in-error":
            return f"Observation/{obs['id']}"
    return None


# -- operations ------------------------------------------------------------------------
def _extract(call: Call, res_type: str | None, res_id: str | None,
             params: list[tuple[str, str]], body: Any) -> Result:
    with call.db.read() as conn:
        if res_id is not None:
            stored = Repository(conn).read("QuestionnaireResponse", res_id)
            if stored is None or stored.deleted:
                raise FhirError(404, "not-found", f"QuestionnaireResponse/{res_id} is not known")
            qr, qr_ref = stored.resource(), f"QuestionnaireResponse/{res_id}"
        else:
            qr, qr_ref = _qr_from_body(body), None
        result = score_response(questionnaire_for(conn, qr), qr)
    raise_if_invalid(result.issues)
    return Result(200, resource=extract.extract_bundle(qr, result, qr_reference=qr_ref))


def _qr_from_body(body: Any) -> dict:
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        for param in body.get("parameter") or []:
            if param.get("name") == "questionnaire-response" and param.get("resource"):
                body = param["resource"]
                break
    if not isinstance(body, dict) or body.get("resourceType") != "QuestionnaireResponse":
        raise FhirError(400, "invalid", "$extract needs a QuestionnaireResponse (or Parameters "
                        "with 'questionnaire-response')")
    return body


def _recommend_care(call: Call, res_type: str | None, res_id: str | None,
                    params: list[tuple[str, str]], body: Any) -> Result:
    return Result(200, resource=care_recommendation(call, res_id or ""))


def care_recommendation(call: Call, patient_id: str) -> dict:
    """The stepped-care recommendation Parameters for a patient, from the latest scored
    PHQ-9/GAD-7/PHQ-2/GAD-2 responses and the active safety flags the caller may see (the
    consent gate applies: a recipient without consent gets a recommendation from nothing).
    404 when the patient is unknown or hidden."""
    patient_ref = f"Patient/{patient_id}"
    with call.db.read() as conn:
        view = CallerView(conn, call)
        if view.read(patient_ref) is None:
            raise FhirError(404, "not-found", f"{patient_ref} is not known")
        latest: dict[str, tuple[str, ScreeningResult]] = {}
        for qr in view.search("QuestionnaireResponse", [("subject", patient_ref)],
                              limit=10_000):
            if qr.get("status") not in SCORED_STATUSES:
                continue
            result = score_response(questionnaire_for(conn, qr), qr)
            if result.instrument is None or result.status not in ("complete", "incomplete"):
                continue
            authored = qr.get("authored") or qr["meta"]["lastUpdated"]
            if result.instrument not in latest or authored > latest[result.instrument][0]:
                latest[result.instrument] = (authored, result)
        flags = view.search("Flag", [("patient", patient_ref)])
    results = [r for _, r in latest.values()]
    return recommend_care(results, safety_flag_active=bool(active_safety_flags(flags)))
