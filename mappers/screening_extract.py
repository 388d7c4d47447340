"""Observations (SDC Observation-based extraction) and safety resources from a scored QR.

Everything here is pure: dicts in, Bundle entries out. References among the created
resources use ``urn:uuid:`` fullUrls so the entries can be posted as one transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fhir_server.errors import FhirError
from fhir_server.json_tree import copy_tree
from mappers.screening import ItemAnswer, ScreeningResult
from mappers.screening_instruments import (
    BASE,
    INSTRUMENTS,
    LOCAL_CS,
    SELF_HARM_ITEM,
    SEVERITY_CS,
    UCUM,
    Instrument,
)

IdFactory = Callable[[], str]

SCREENING_PROFILE = (
    "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-screening-assessment")
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
V3_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_ABSENT = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
SNOMED = "http://snomed.info/sct"
FLAG_CATEGORY = "http://terminology.hl7.org/CodeSystem/flag-category"
FLAG_DETAIL_URL = "http://hl7.org/fhir/StructureDefinition/flag-detail"
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
ITEM9_SCORE_URL = f"{BASE}/StructureDefinition/phq9-item9-score"
SAFETY_FLAG_CODE = "phq9-item9-positive"
CRISIS_TEXT = ("Crisis resources: 988 Suicide & Crisis Lifeline - call or text 988, or chat at "
               "988lifeline.org (24/7). If there is immediate danger, call 911.")

# Reference types allowed by R4 for Observation.performer, Flag.author and Task.requester.
_PERFORMER_TYPES = {"Practitioner", "PractitionerRole", "Organization", "CareTeam", "Patient",
                    "RelatedPerson"}
_FLAG_AUTHOR_TYPES = {"Device", "Organization", "Patient", "Practitioner", "PractitionerRole"}
_TASK_REQUESTER_TYPES = {"Device", "Organization", "Patient", "Practitioner",
                         "PractitionerRole", "RelatedPerson"}
# Same-day risk-assessment Task priority by PHQ-9 item-9 score (needs clinical sign-off).
TASK_PRIORITY_BY_ITEM9 = {1: "urgent", 2: "asap", 3: "stat"}


def _new_id() -> str:
    return str(uuid.uuid4())


def _ref_type(ref: dict | None) -> str | None:
    reference = (ref or {}).get("reference") or ""
    return reference.split("/")[0] if "/" in reference and ":" not in reference else None


def _allowed(ref: dict | None, types: set[str]) -> bool:
    return _ref_type(ref) in types


def _qr_reference(qr: dict, qr_reference: str | None) -> str | None:
    if qr_reference:
        return qr_reference
    return f"QuestionnaireResponse/{qr['id']}" if qr.get("id") else None


def _is_instant(value: str | None) -> bool:
    return bool(value) and "T" in value and (value.endswith("Z") or "+" in value[10:]
                                             or "-" in value[10:])


def _common(qr: dict, qr_ref: str | None) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "meta": {"profile": [SCREENING_PROFILE]},
        "status": "preliminary" if qr.get("status") == "in-progress" else "final",
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": "survey",
                                  "display": "Survey"}]}],
    }
    if qr.get("basedOn"):
        obs["basedOn"] = copy_tree(qr["basedOn"])
    for key in ("subject", "encounter"):
        if qr.get(key):
            obs[key] = copy_tree(qr[key])
    if qr.get("authored"):
        obs["effectiveDateTime"] = qr["authored"]
        if _is_instant(qr["authored"]):
            obs["issued"] = qr["authored"]
    performer = qr.get("author") if _allowed(qr.get("author"), _PERFORMER_TYPES) else None
    if performer is None and _allowed(qr.get("source"), _PERFORMER_TYPES):
        performer = qr["source"]
    if performer is not None:
        obs["performer"] = [copy_tree(performer)]
    if qr_ref:
        obs["derivedFrom"] = [{"reference": qr_ref}]
    return obs


def _code(system: str, code: str, display: str) -> dict:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def _with_code(base: dict, code: dict) -> dict:
    """A deep copy of base with ``code`` placed right after ``category`` (readable order)."""
    obs: dict[str, Any] = {}
    for key, value in base.items():
        obs[key] = copy_tree(value)
        if key == "category":
            obs["code"] = code
    return obs


def _item_observation(base: dict, ans: ItemAnswer) -> dict:
    coding = next(c for c in ans.codes if c.get("code"))
    obs = _with_code(base, {"coding": [copy_tree(coding)],
                            "text": ans.text or coding.get("display")})
    answer = {k: ans.value[k] for k in ("system", "code", "display") if k in ans.value}
    obs["valueCodeableConcept"] = {"coding": [answer]}
    if answer.get("display"):
        obs["valueCodeableConcept"]["text"] = answer["display"]
    return obs


def _total_observation(base: dict, inst: Instrument, result: ScreeningResult) -> dict:
    assert result.total is not None and result.band is not None
    obs = _with_code(base, _code(*inst.total))
    obs["valueQuantity"] = {"value": result.total, "unit": "{score}", "system": UCUM,
                            "code": "{score}"}
    codings = [{"system": SEVERITY_CS, "code": result.band.code, "display": result.band.display}]
    if result.band.code in ("positive", "negative"):
        v3 = ("POS", "Positive") if result.band.code == "positive" else ("NEG", "Negative")
        codings.append({"system": V3_INTERPRETATION, "code": v3[0], "display": v3[1]})
    obs["interpretation"] = [{"coding": codings, "text": result.band.display}]
    obs["referenceRange"] = [{"low": {"value": 0, "unit": "{score}", "system": UCUM,
                                      "code": "{score}"},
                              "high": {"value": inst.max_total, "unit": "{score}",
                                       "system": UCUM, "code": "{score}"},
                              "text": f"Possible range 0-{inst.max_total}"}]
    return obs


def _panel_observation(base: dict, inst: Instrument, result: ScreeningResult,
                       members: list[str]) -> dict:
    obs = _with_code(base, _code(*inst.panel))
    obs["hasMember"] = [{"reference": m} for m in members]
    notes = []
    if result.status == "incomplete":
        notes.append(f"Incomplete: items {', '.join(result.missing_items)} unanswered; no total "
                     "score was computed.")
        if inst.asks_self_harm and result.item9 is None:
            notes.append("PHQ-9 item 9 (thoughts of self-harm) unanswered: risk unknown.")
    if inst.depression_screen and not inst.asks_self_harm:
        obs["component"] = [{
            "code": _code("http://loinc.org", SELF_HARM_ITEM, "Thoughts that you would be "
                          "better off dead, or of hurting yourself in some way in last 2 weeks "
                          "[Reported.PHQ]"),
            "dataAbsentReason": {"coding": [{"system": DATA_ABSENT, "code": "not-asked",
                                             "display": "Not Asked"}],
                                 "text": f"{inst.title} does not ask about self-harm"},
        }]
        notes.append(f"Self-harm was NOT asked: the {inst.title} has no self-harm item. A "
                     "negative result says nothing about suicide risk.")
    if notes:
        obs["note"] = [{"text": n} for n in notes]
    return obs


def _entry(full_url: str, resource: dict) -> dict:
    return {"fullUrl": full_url, "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"]}}


def extract_observations(qr: dict, result: ScreeningResult, *,
                         id_factory: IdFactory | None = None,
                         qr_reference: str | None = None) -> list[dict]:
    """Transaction Bundle entries (fullUrl, resource, request) for the QR's Observations.

    One Observation per answered instrument item (the scored items and the PHQ-9 difficulty
    item), the total score (only when complete) and a panel Observation whose ``hasMember``
    lists them all. ``qr_reference`` defaults to ``QuestionnaireResponse/<qr.id>``; pass the
    QR's ``urn:uuid:`` fullUrl when it is created in the same transaction.
    Raises ValueError for a result that is invalid or not scored.
    """
    inst = INSTRUMENTS.get(result.instrument or "")
    if inst is None or result.status not in ("complete", "incomplete"):
        raise ValueError(f"cannot extract Observations from a {result.status} result")
    new_id = id_factory or _new_id
    base = _common(qr, _qr_reference(qr, qr_reference))
    extractable = set(inst.item_codes) | set(inst.unscored_items)
    entries = []
    for ans in result.answers:
        code = next((c.get("code") for c in ans.codes if c.get("system") == "http://loinc.org"),
                    None)
        if code in extractable and ans.value_key == "valueCoding":
            entries.append(_entry(f"urn:uuid:{new_id()}", _item_observation(base, ans)))
    if result.total is not None:
        entries.append(_entry(f"urn:uuid:{new_id()}", _total_observation(base, inst, result)))
    panel = _panel_observation(base, inst, result, [e["fullUrl"] for e in entries])
    return [_entry(f"urn:uuid:{new_id()}", panel), *entries]


def extract_bundle(qr: dict, result: ScreeningResult, *, id_factory: IdFactory | None = None,
                   qr_reference: str | None = None) -> dict:
    """The SDC ``$extract`` answer: a transaction Bundle of the Observations (not stored).

    Raises FhirError 422 carrying the scorer's issues when the result cannot be extracted.
    """
    if result.instrument is None or result.status not in ("complete", "incomplete"):
        issues = result.issues or None
        raise FhirError(422, "processing", "The QuestionnaireResponse cannot be extracted: "
                        f"it is {result.status}", issues=issues)
    entries = extract_observations(qr, result, id_factory=id_factory, qr_reference=qr_reference)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def find_entry(entries: list[dict], code: str) -> dict | None:
    """The first entry whose resource has ``code`` (e.g. 44260-8) among its code codings."""
    for entry in entries:
        codings = (entry.get("resource") or {}).get("code", {}).get("coding", [])
        if any(c.get("code") == code for c in codings):
            return entry
    return None


def item9_reference(entries: list[dict]) -> str | None:
    """Reference (fullUrl or ``Observation/<id>``) of the PHQ-9 item-9 Observation."""
    entry = find_entry(entries, SELF_HARM_ITEM)
    if entry is None:
        return None
    resource = entry["resource"]
    if entry.get("fullUrl", "").startswith("urn:uuid:"):
        return entry["fullUrl"]
    return f"Observation/{resource['id']}" if resource.get("id") else entry.get("fullUrl")


# --------------------------------------------------------------------------- safety


def _due(authored: str | None) -> str | None:
    """24 hours after ``authored`` (same-day assessment); None when it is not a dateTime."""
    if not authored or "T" not in authored:
        return authored or None
    try:
        start = datetime.fromisoformat(authored.replace("Z", "+00:00"))
    except ValueError:
        return None
    due = start + timedelta(hours=24)
    text = due.isoformat(timespec="milliseconds" if due.microsecond else "seconds")
    return text.replace("+00:00", "Z") if authored.endswith("Z") else text


def safety_resources(qr: dict, result: ScreeningResult, item9_obs_ref: str,
                     requester_org_ref: str | None, *, id_factory: IdFactory | None = None,
                     now: str | None = None) -> list[dict]:
    """The Flag and the same-day risk-assessment Task for a positive PHQ-9 item 9.

    Returns [] when item 9 is 0 or unanswered. ``item9_obs_ref`` is the item-9 Observation
    (``urn:uuid:`` fullUrl or ``Observation/<id>``); ``requester_org_ref`` the Organization
    that owns the Task (None leaves it unassigned). ``now`` is Task.authoredOn (default:
    QR.authored).
    """
    if not result.safety_flag or result.item9 is None:
        return []
    new_id = id_factory or _new_id
    item9 = result.item9
    answer = next((a for a in result.answers if a.score is not None and any(
        c.get("code") == SELF_HARM_ITEM for c in a.codes)), None)
    answer_text = (answer.value.get("display") if answer else None) or f"score {item9}"
    authored = qr.get("authored")
    flag_url = f"urn:uuid:{new_id()}"
    flag: dict[str, Any] = {
        "resourceType": "Flag",
        "extension": [
            {"url": FLAG_DETAIL_URL, "valueReference": {"reference": item9_obs_ref}},
            {"url": FLAG_PRIORITY_URL, "valueCodeableConcept": {"coding": [{
                "system": "http://hl7.org/fhir/flag-priority-code", "code": "PH",
                "display": "High priority"}]}},
            {"url": ITEM9_SCORE_URL, "valueInteger": item9},
        ],
        "status": "active",
        "category": [{"coding": [{"system": FLAG_CATEGORY, "code": "safety",
                                  "display": "Safety"}]}],
        "code": {"coding": [
            {"system": SNOMED, "code": "6471006", "display": "Suicidal thoughts"},
            {"system": LOCAL_CS, "code": SAFETY_FLAG_CODE,
             "display": "PHQ-9 item 9 positive (thoughts of death or self-harm)"}],
            "text": f"PHQ-9 item 9 positive ({answer_text}): thoughts of being better off dead "
                    "or of self-harm. Same-day clinician risk assessment required."},
    }
    for key in ("subject", "encounter"):
        if qr.get(key):
            flag[key] = copy_tree(qr[key])
    if authored:
        flag["period"] = {"start": authored}
    if _allowed(qr.get("author"), _FLAG_AUTHOR_TYPES):
        flag["author"] = copy_tree(qr["author"])
    task = _risk_task(qr, item9, flag_url, item9_obs_ref, requester_org_ref, now or authored)
    return [_entry(flag_url, flag), _entry(f"urn:uuid:{new_id()}", task)]


def _risk_task(qr: dict, item9: int, flag_url: str, item9_obs_ref: str,
               owner: str | None, authored_on: str | None) -> dict:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "priority": TASK_PRIORITY_BY_ITEM9[item9],
        "code": {"coding": [{"system": SNOMED, "code": "225337009",
                             "display": "Suicide risk assessment (procedure)"}],
                 "text": "Same-day clinician suicide risk assessment"},
        "description": "PHQ-9 item 9 was answered above 'Not at all'. A clinician must assess "
                       "suicide risk today (for example with the C-SSRS screener) before any "
                       "routine referral routing.",
        "focus": {"reference": flag_url},
        "reasonReference": {"reference": item9_obs_ref},
        "note": [{"text": CRISIS_TEXT}],
    }
    if qr.get("subject"):
        task["for"] = copy_tree(qr["subject"])
    if qr.get("encounter"):
        task["encounter"] = copy_tree(qr["encounter"])
    if authored_on:
        task["authoredOn"] = authored_on
        due = _due(authored_on)
        if due:
            task["restriction"] = {"period": {"end": due}}
    if _allowed(qr.get("author"), _TASK_REQUESTER_TYPES):
        task["requester"] = copy_tree(qr["author"])
    if owner:
        task["owner"] = {"reference": owner}
    return task


# --------------------------------------------------------------------------- amendment


def _code_key(resource: dict) -> tuple[str | None, str | None]:
    coding = (resource.get("code", {}).get("coding") or [{}])[0]
    return coding.get("system"), coding.get("code")


def _same_content(old: dict, new: dict) -> bool:
    def strip(r: dict) -> dict:
        return {k: v for k, v in r.items() if k not in ("id", "meta", "status")}
    return strip(old) == strip(new)


def _rewrite(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: (mapping.get(v, v) if k == "reference" and isinstance(v, str)
                    else _rewrite(v, mapping)) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite(v, mapping) for v in value]
    return value


def _put(resource: dict) -> dict:
    return {"resource": resource,
            "request": {"method": "PUT", "url": f"Observation/{resource['id']}"}}


def supersede(previous_observations: list[dict],
              new_entries: list[dict] | None = None) -> list[dict]:
    """Transaction entries that replace the Observations of an earlier version of a QR.

    With ``new_entries`` (from extract_observations for the amended QR): each earlier
    Observation with the same code is updated in place (same id, status ``amended``, new
    content; skipped if nothing changed), earlier ones with no counterpart become
    ``entered-in-error``, and new ones without a counterpart are created. References between
    the new entries are rewritten to the reused ids. Without ``new_entries`` every earlier
    Observation is marked ``entered-in-error``.
    """
    live = [o for o in previous_observations if o.get("status") != "entered-in-error"]
    by_key: dict[tuple, list[dict]] = {}
    for obs in live:
        by_key.setdefault(_code_key(obs), []).append(obs)
    mapping: dict[str, str] = {}
    matched: dict[str, dict] = {}
    for entry in new_entries or []:
        candidates = by_key.get(_code_key(entry["resource"])) or []
        old = candidates.pop(0) if candidates else None
        if old is not None:
            mapping[entry["fullUrl"]] = f"Observation/{old['id']}"
            matched[entry["fullUrl"]] = old
    out: list[dict] = []
    for entry in new_entries or []:
        resource = _rewrite(entry["resource"], mapping)
        old = matched.get(entry["fullUrl"])
        if old is None:
            out.append({**entry, "resource": resource})
            continue
        resource = {**resource, "id": old["id"], "status": "amended"}
        if not _same_content(old, resource):
            out.append(_put(resource))
    for leftovers in by_key.values():
        for old in leftovers:
            out.append(_put({**copy_tree(old), "status": "entered-in-error"}))
    return out


def supersede_safety_flags(previous_flags: list[dict], result: ScreeningResult) -> list[dict]:
    """Transaction entries that bring the Flags raised by an earlier QR version up to date.

    When the amended response no longer has a positive item 9, the earlier active safety
    Flags were raised in error and become ``entered-in-error``; when item 9 is still positive
    but its score changed, their item-9 score extension is updated. Flags that are not ours
    or not active are left alone. (Cancelling the linked risk-assessment Task, if still open,
    is a workflow decision left to the caller.)
    """
    out = []
    for flag in previous_flags:
        codes = {(c.get("system"), c.get("code"))
                 for c in (flag.get("code") or {}).get("coding") or []}
        if flag.get("status") != "active" or (LOCAL_CS, SAFETY_FLAG_CODE) not in codes:
            continue
        updated = copy_tree(flag)
        if not result.safety_flag:
            updated["status"] = "entered-in-error"
        else:
            exts = [e for e in updated.get("extension") or [] if e.get("url") != ITEM9_SCORE_URL]
            updated["extension"] = [*exts, {"url": ITEM9_SCORE_URL, "valueInteger": result.item9}]
            if updated == flag:
                continue
        out.append({"resource": updated,
                    "request": {"method": "PUT", "url": f"Flag/{flag['id']}"}})
    return out
