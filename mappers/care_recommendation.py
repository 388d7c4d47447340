"""Recommended level of care (stepped care) and the safety floor on referral priority.

DRAFT PRODUCT RULES - REQUIRE CLINICAL SIGN-OFF. The table below is built from Kroenke &
Spitzer 2002 (PHQ-9 proposed treatment actions), Spitzer 2006 (GAD-7 cut points), NICE NG222
(stepped care) and the routing draft in the project's screening notes (section 6.2). It is
not clinical guidance; a clinical owner must approve it before production use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mappers.screening import ScreeningResult
from mappers.screening_extract import ITEM9_SCORE_URL, SAFETY_FLAG_CODE, TASK_PRIORITY_BY_ITEM9
from mappers.screening_instruments import IMPAIRED_DIFFICULTY, LOCAL_CS

SNOMED = "http://snomed.info/sct"
CARE_STEP_CS = f"{LOCAL_CS.rsplit('/', 1)[0]}/care-step"
PRIORITY_ORDER = ("routine", "urgent", "asap", "stat")
SIGN_OFF_NOTE = ("DRAFT stepped-care table: requires clinical sign-off before production use. "
                 "A suggestion for the referring clinician, never an automatic decision.")
CRISIS_TEXT = ("Crisis resources: 988 Suicide & Crisis Lifeline - call or text 988, or chat at "
               "988lifeline.org (24/7). If there is immediate danger, call 911.")

# SNOMED CT referral codes (screening.md section 6.1, VSAC 2.16.840.1.113883.3.526.3.1571 etc.).
SERVICE_CODES: dict[str, str] = {
    "183524004": "Referral to psychiatry service",
    "390866009": "Referral to mental health team",
    "306226009": "Referral to mental health counseling service",
    "306252003": "Referral to mental health counselor",
    "461481000124109": "Referral to peer support",
}


@dataclass(frozen=True)
class CareStep:
    """One row of the stepped-care table."""

    rank: int
    code: str
    display: str
    condition: str
    services: tuple[str, ...]
    priority: str | None
    action: str


CARE_TABLE: tuple[CareStep, ...] = (
    CareStep(7, "safety", "Safety pathway", "PHQ-9 item 9 >= 1, or an active safety flag",
             ("183524004", "390866009"), "urgent",
             "Same-day clinician risk assessment first (e.g. C-SSRS); behavioural-health "
             "referral only after it; give crisis resources. Priority: urgent (item 9 = 1), "
             "asap (2), stat (3)."),
    CareStep(6, "specialist", "Specialist mental-health care", "PHQ-9 20-27 or GAD-7 15-21",
             ("183524004", "390866009"), "urgent",
             "Expedited referral to psychiatry / mental-health team; start treatment now."),
    CareStep(5, "high-intensity", "High-intensity treatment", "PHQ-9 15-19",
             ("306226009", "390866009"), "routine",
             "Active treatment: psychotherapy and/or medication, collaborative care. Urgent when "
             "the PHQ-9 difficulty item is 'Very' or 'Extremely difficult'."),
    CareStep(4, "therapy", "Counselling / psychological therapy", "PHQ-9 10-14 or GAD-7 10-14",
             ("306226009", "306252003"), "routine",
             "Treatment plan: counselling or therapy, collaborative care if available."),
    CareStep(3, "low-intensity", "Low-intensity support and watchful waiting",
             "PHQ-9 5-9 or GAD-7 5-9", ("461481000124109",), "routine",
             "Watchful waiting, peer support or self-help; repeat the screen at follow-up."),
    CareStep(2, "full-screen", "Complete the full instrument", "PHQ-2 >= 3 or GAD-2 >= 3",
             (), "routine", "Positive pre-screen: administer the full PHQ-9 / GAD-7."),
    CareStep(1, "none", "No referral indicated", "All scores minimal / negative", (), None,
             "No referral; routine re-screening."),
    CareStep(0, "insufficient", "Screening incomplete", "No complete screening result", (), None,
             "Complete the screening (incomplete or unscored responses are not used)."),
)
_STEPS = {s.code: s for s in CARE_TABLE}


def _max_priority(*priorities: str | None) -> str | None:
    present = [p for p in priorities if p]
    return max(present, key=PRIORITY_ORDER.index) if present else None


def _step_for(result: ScreeningResult) -> tuple[CareStep, str | None]:
    """The care step one complete result indicates, and its priority."""
    total, key = result.total or 0, result.instrument
    if key == "phq-9":
        if total >= 20:
            return _STEPS["specialist"], "urgent"
        if total >= 15:
            impaired = result.difficulty in IMPAIRED_DIFFICULTY
            return _STEPS["high-intensity"], "urgent" if impaired else "routine"
        if total >= 10:
            return _STEPS["therapy"], "routine"
        if total >= 5:
            return _STEPS["low-intensity"], "routine"
    elif key == "gad-7":
        if total >= 15:
            return _STEPS["specialist"], "urgent"
        if total >= 10:
            return _STEPS["therapy"], "routine"
        if total >= 5:
            return _STEPS["low-intensity"], "routine"
    elif key in ("phq-2", "gad-2") and total >= 3:
        return _STEPS["full-screen"], "routine"
    return _STEPS["none"], None


def _coding_param(name: str, system: str, code: str, display: str) -> dict:
    return {"name": name, "valueCodeableConcept": {
        "coding": [{"system": system, "code": code, "display": display}], "text": display}}


def _table_parameter() -> dict:
    rows = []
    for step in CARE_TABLE:
        part: list[dict[str, Any]] = [
            {"name": "step", "valueCode": step.code},
            {"name": "condition", "valueString": step.condition},
            {"name": "action", "valueString": step.action},
        ]
        part += [_coding_param("service-category", SNOMED, c, SERVICE_CODES[c])
                 for c in step.services]
        if step.priority:
            part.append({"name": "priority", "valueCode": step.priority})
        rows.append({"name": "row", "part": part})
    return {"name": "table", "part": rows}


def _score_parameter(result: ScreeningResult) -> dict:
    part: list[dict[str, Any]] = [
        {"name": "instrument", "valueString": result.instrument or "unknown"},
        {"name": "status", "valueCode": result.status},
    ]
    if result.total is not None and result.band is not None:
        part += [{"name": "total", "valueInteger": result.total},
                 {"name": "band", "valueCode": result.band.code}]
    if result.item9 is not None:
        part.append({"name": "item9", "valueInteger": result.item9})
    return {"name": "score", "part": part}


def recommend_care(results: list[ScreeningResult], *, safety_flag_active: bool) -> dict:
    """Suggest a level of care, service categories and priority from screening results.

    Pass the most recent result per instrument. Incomplete, invalid and unscored results are
    reported but not used. A positive PHQ-9 item 9 (in ``results``) or an active safety flag
    always selects the safety pathway, whatever the totals. Returns a FHIR Parameters
    resource that carries the table it used and ``requires-clinical-sign-off = true``.
    """
    rationale: list[str] = []
    step, priority = _STEPS["insufficient"], None
    item9 = max((r.item9 for r in results if r.item9 is not None), default=None)
    usable = [r for r in results if r.status == "complete"]
    for r in results:
        if r.status != "complete":
            rationale.append(f"{r.instrument or 'Unscored response'} ({r.status}) not used: "
                             + r.summary())
    for r in usable:
        s, p = _step_for(r)
        rationale.append(f"{r.summary()} -> {s.display}")
        if s.rank > step.rank:
            step = s
        priority = _max_priority(priority, p)
    if usable and step.rank < _STEPS["none"].rank:
        step = _STEPS["none"]
    safety = safety_flag_active or (item9 is not None and item9 > 0)
    if safety:
        step = _STEPS["safety"]
        floor = TASK_PRIORITY_BY_ITEM9.get(item9 or 0, "urgent")
        priority = _max_priority(priority, floor)
        rationale.insert(0, "Safety pathway: " + (
            f"PHQ-9 item 9 answered {item9}" if item9 else "an active safety flag")
            + " - same-day risk assessment before routine routing.")
    self_harm_asked = any(r.self_harm_asked for r in results)
    if not self_harm_asked:
        rationale.append("Self-harm was not assessed by these screens (no PHQ-9 item 9 answer): "
                         "ask directly or administer the full PHQ-9.")
    params: list[dict[str, Any]] = [
        _coding_param("level-of-care", CARE_STEP_CS, step.code, step.display),
        *[_coding_param("service-category", SNOMED, c, SERVICE_CODES[c]) for c in step.services],
    ]
    if priority:
        params.append({"name": "priority", "valueCode": priority})
    params.append({"name": "action", "valueString": step.action})
    params += [{"name": "rationale", "valueString": line} for line in rationale]
    params += [
        {"name": "safety-flag-active", "valueBoolean": safety},
        {"name": "self-harm-assessed", "valueBoolean": self_harm_asked},
    ]
    if safety:
        params.append({"name": "crisis-resources", "valueString": CRISIS_TEXT})
    params += [_score_parameter(r) for r in results]
    params += [
        {"name": "requires-clinical-sign-off", "valueBoolean": True},
        {"name": "sign-off-note", "valueString": SIGN_OFF_NOTE},
        _table_parameter(),
    ]
    return {"resourceType": "Parameters", "parameter": params}


# --------------------------------------------------------------------------- referral floor


@dataclass(frozen=True)
class PriorityDecision:
    """The priority a new referral must carry, and why."""

    priority: str
    floor: str | None
    raised: bool
    overridden: bool
    routine_clock_allowed: bool
    reason: str


def active_safety_flags(flags: list[dict]) -> list[dict]:
    """The Flags that are our active PHQ-9 item-9 safety flags."""
    return [f for f in flags if f.get("status") == "active" and any(
        c.get("code") == SAFETY_FLAG_CODE and c.get("system") == LOCAL_CS
        for c in (f.get("code") or {}).get("coding") or [])]


def _flag_item9(flag: dict) -> int | None:
    for ext in flag.get("extension") or []:
        if ext.get("url") == ITEM9_SCORE_URL and isinstance(ext.get("valueInteger"), int):
            return ext["valueInteger"]
    return None


def referral_priority_floor(requested: str | None, *, flags: list[dict],
                            override_reason: str | None = None) -> PriorityDecision:
    """Apply the safety rule to a referral's requested priority.

    While the patient has an active item-9 safety Flag, a referral carries at least
    ``urgent`` (``stat`` when item 9 was "Nearly every day", score 3) unless a clinician
    overrides with a reason, and it never enters the routine stalled-referral clock (not even
    when overridden). ``flags`` are the patient's Flags (inactive and foreign ones ignored).
    """
    requested = requested or "routine"
    if requested not in PRIORITY_ORDER:
        raise ValueError(f"unknown request priority {requested!r}")
    active = active_safety_flags(flags)
    if not active:
        return PriorityDecision(requested, None, False, False, True, "No active safety flag")
    worst = max(_flag_item9(f) or 1 for f in active)
    floor = "stat" if worst >= 3 else "urgent"
    if override_reason and override_reason.strip():
        return PriorityDecision(requested, floor, False, True, False,
                                f"Clinician override of the safety floor '{floor}': "
                                f"{override_reason.strip()}")
    priority = _max_priority(requested, floor) or floor
    raised = priority != requested
    reason = (f"Active safety flag (PHQ-9 item 9 = {worst}): priority at least '{floor}'"
              + (f", raised from '{requested}'" if raised else ""))
    return PriorityDecision(priority, floor, raised, False, False, reason)

