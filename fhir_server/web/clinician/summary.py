"""The patient summary: demographics, screening history and latest answers, the safety state
and earlier referrals, read in one batch request with the user's token."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

from markupsafe import Markup

from fhir_server.web import words
from fhir_server.web.api import ApiError, FhirApi, entries
from fhir_server.web.charts import BandArea, Point, score_chart
from fhir_server.web.clinician.referrals import ReferralRow, referral_rows
from fhir_server.web.names import Names
from mappers.care_recommendation import CRISIS_TEXT, active_safety_flags
from mappers.screening_extract import ITEM9_SCORE_URL
from mappers.screening_instruments import GAD7, PHQ9, Instrument

LOINC = "http://loinc.org"
INSTRUMENTS: tuple[Instrument, ...] = (PHQ9, GAD7)
RISK_TASK_CODE = "http://snomed.info/sct|225337009"
REFERRAL_TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code|fulfill"
OPEN_TASK = "requested,accepted,in-progress,on-hold"
ITEM9_WORDS = {1: "Several days", 2: "More than half the days", 3: "Nearly every day"}


@dataclass
class Score:
    when: datetime
    value: int
    band: str
    observation: str  # Observation/x


@dataclass
class Series:
    instrument: Instrument
    scores: list[Score]

    @property
    def latest(self) -> Score | None:
        return self.scores[-1] if self.scores else None

    def chart(self) -> Markup:
        points = [Point(s.when, s.value, f"{s.value} on {s.when.day} {s.when:%b %Y}")
                  for s in self.scores]
        bands = [BandArea(b.low, b.high, b.code.replace("-", " ").capitalize(), level)
                 for level, b in enumerate(self.instrument.bands)]
        short = self.instrument.title.split("(")[-1].rstrip(")")
        return score_chart(f"{short} totals over time", points, bands,
                           self.instrument.max_total, f"chart-{self.instrument.key}")


@dataclass
class Answers:
    title: str
    authored: str
    response: str  # QuestionnaireResponse/x
    rows: list[tuple[str, str]]


@dataclass
class Safety:
    """An active item-9 safety Flag and the open risk-assessment Task."""

    flag: dict
    item9: int | None
    since: str
    task: dict | None
    crisis_text: str

    @property
    def answer(self) -> str:
        return ITEM9_WORDS.get(self.item9 or 0, "above 'Not at all'")

    @property
    def due(self) -> str:
        return ((self.task or {}).get("restriction") or {}).get("period", {}).get("end", "")

    @property
    def overdue(self) -> bool:
        due = words.parse_time(self.due)
        return due is not None and due < datetime.now(UTC)


@dataclass
class Summary:
    patient: dict
    series: list[Series]
    answers: list[Answers]
    safety: Safety | None
    referrals: list[ReferralRow]
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return words.human_name(self.patient)

    @property
    def age(self) -> int | None:
        return words.age_on(self.patient.get("birthDate"))

    @property
    def identifiers(self) -> list[tuple[str, str]]:
        return words.identifier_rows(self.patient)

    @property
    def language(self) -> str:
        return words.patient_language(self.patient)

    @property
    def latest_total(self) -> dict[str, Score | None]:
        return {s.instrument.key: s.latest for s in self.series}


def summary_urls(patient_id: str) -> list[str]:
    """The searches one summary needs (one batch)."""
    ref = f"Patient/{patient_id}"
    totals = ",".join(f"{LOINC}|{i.total[1]}" for i in INSTRUMENTS)
    return [
        ref,
        "Observation?" + urlencode({"patient": ref, "code": totals, "_sort": "-date",
                                    "_count": "100"}),
        "QuestionnaireResponse?" + urlencode({"subject": ref, "_sort": "-authored",
                                              "_count": "20"}),
        "Flag?" + urlencode({"patient": ref, "status": "active"}),
        "Task?" + urlencode({"patient": ref, "code": RISK_TASK_CODE, "status": OPEN_TASK,
                             "_sort": "-_lastUpdated", "_count": "5"}),
        "Task?" + urlencode([("patient", ref), ("code", REFERRAL_TASK_CODE),
                             ("_sort", "-_lastUpdated"), ("_count", "20"),
                             ("_include", "Task:owner")]),
    ]


def load_summary(api: FhirApi, patient_id: str) -> Summary:
    """Read everything the summary shows; a missing or hidden patient raises ApiError 404."""
    answers = api.batch(summary_urls(patient_id))
    patient = answers[0]
    if isinstance(patient, ApiError):
        raise patient
    problems = [f"{a.url.split('?')[0]}: {a.message}" for a in answers[1:]
                if isinstance(a, ApiError)]

    def bundle(i: int) -> dict:
        value = answers[i]
        return {} if isinstance(value, ApiError) else value

    names = Names(api)
    names.know(patient)
    for resource in entries(bundle(5), "include"):
        names.know(resource)
    referral_tasks = entries(bundle(5))
    rows = referral_rows(names, referral_tasks)
    return Summary(patient=patient, series=score_series(entries(bundle(1))),
                   answers=latest_answers(entries(bundle(2))),
                   safety=safety_state(entries(bundle(3)), entries(bundle(4))),
                   referrals=rows, problems=problems)


def _total_value(obs: dict) -> int | None:
    value = obs.get("valueInteger")
    if value is None:
        value = (obs.get("valueQuantity") or {}).get("value")
    return int(value) if isinstance(value, int | float) else None


def score_series(observations: list[dict]) -> list[Series]:
    """PHQ-9 and GAD-7 totals, oldest first, per instrument (entered-in-error left out)."""
    out = []
    for instrument in INSTRUMENTS:
        scores = []
        for obs in observations:
            codes = {c.get("code") for c in (obs.get("code") or {}).get("coding") or []}
            value = _total_value(obs)
            when = words.parse_time(obs.get("effectiveDateTime") or obs.get("issued"))
            if instrument.total[1] not in codes or value is None or when is None \
                    or obs.get("status") in ("entered-in-error", "cancelled") \
                    or not 0 <= value <= instrument.max_total:
                continue
            scores.append(Score(when, value, instrument.band_for(value).display,
                                f"Observation/{obs.get('id')}"))
        scores.sort(key=lambda s: s.when)
        out.append(Series(instrument, scores))
    return out


def latest_answers(responses: list[dict]) -> list[Answers]:
    """The latest completed response of each instrument, item by item in words."""
    out = []
    for instrument in INSTRUMENTS:
        mine = [r for r in responses if (r.get("questionnaire") or "").split("|")[0]
                == instrument.canonical and r.get("status") in ("completed", "amended")]
        if not mine:
            continue
        latest = max(mine, key=lambda r: r.get("authored") or "")
        questions = {i.code: i.text for i in instrument.items}
        rows = []
        for item in latest.get("item") or []:
            code = (item.get("linkId") or "").lstrip("/")
            answer = (item.get("answer") or [{}])[0]
            coding = answer.get("valueCoding") or {}
            text = coding.get("display") or coding.get("code") or str(
                answer.get("valueInteger", answer.get("valueString", "")))
            rows.append((questions.get(code) or item.get("text") or code, text or "-"))
        short = instrument.title.split("(")[-1].rstrip(")")
        out.append(Answers(short, latest.get("authored") or "", f"QuestionnaireResponse/"
                           f"{latest.get('id')}", rows))
    return out


def _item9(flag: dict) -> int | None:
    for ext in flag.get("extension") or []:
        if ext.get("url") == ITEM9_SCORE_URL and isinstance(ext.get("valueInteger"), int):
            return ext["valueInteger"]
    return None


def safety_state(flags: list[dict], risk_tasks: list[dict]) -> Safety | None:
    """The active item-9 safety flag (the most severe) and its open risk Task, if any."""
    active = active_safety_flags(flags)
    if not active:
        return None
    flag = max(active, key=lambda f: (_item9(f) or 0, (f.get("period") or {}).get("start", "")))
    flag_ref = f"Flag/{flag.get('id')}"
    task = next((t for t in risk_tasks if (t.get("focus") or {}).get("reference") == flag_ref),
                risk_tasks[0] if risk_tasks else None)
    notes = [n.get("text") for n in (task or {}).get("note") or [] if n.get("text")]
    crisis = next((n for n in notes if "988" in n), CRISIS_TEXT)
    return Safety(flag=flag, item9=_item9(flag), since=(flag.get("period") or {}).get(
        "start", ""), task=task, crisis_text=crisis)
