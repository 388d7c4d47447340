"""The network's headline measures as FHIR: `Measure` resources we publish and the summary
`MeasureReport` that `Measure/[id]/$evaluate-measure` computes for a period.

The figures are the same as `$referral-metrics` for the same period (the report is built
from the `all` group of its answer, stratified by receiving organization), so a page, a CSV
and a MeasureReport never disagree.

  closed-loop-rate      proportion: completed / sent referrals
  median-time-to-accept continuous variable: median hours from referral to acceptance
  response-rate         proportion per instrument: responders / pairs with baseline >= 10
  remission-rate        proportion per instrument: remitters / pairs with baseline >= 10
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import CANONICAL_BASE
from fhir_server.workflow.measurement import ELEVATED_BASELINE, INSTRUMENTS
from fhir_server.workflow.metrics import Answer, Figure
from fhir_server.workflow.referral_facts import instant_us

VERSION = "1.0.0"
DATE = "2026-12-01"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
SCORING = "http://terminology.hl7.org/CodeSystem/measure-scoring"
MEASURE_TYPE = "http://terminology.hl7.org/CodeSystem/measure-type"
IMPROVEMENT = "http://terminology.hl7.org/CodeSystem/measure-improvement-notation"
UCUM = "http://unitsofmeasure.org"
QUERY = "$referral-metrics?group-by=all&start={{%periodStart}}&end={{%periodEnd}}"
"""Where every population of our Measures is counted (x-fhir-query, with the period)."""
SENT = ("Referral Tasks made in the period (first requested, else authored) that were sent: "
        "not drafts, not entered in error, and not redirected (a redirected referral counts "
        "once, through the Task that carries it on)")


@dataclass(frozen=True)
class Population:
    code: str  # initial-population | denominator | numerator | measure-population ...
    description: str
    figure: str  # the figure (metrics CSV column) that counts it; "{i}" = instrument prefix


@dataclass(frozen=True)
class Definition:
    """One published measure and where its figures come from."""

    id: str
    name: str
    title: str
    description: str
    scoring: str  # proportion | continuous-variable
    kind: str  # measure-type: process | outcome
    improvement: str  # increase | decrease
    populations: tuple[Population, ...]
    score: str  # figure of the score ("{i}" = instrument prefix)
    per_instrument: bool = False

    @property
    def url(self) -> str:
        return f"{CANONICAL_BASE}/Measure/{self.id}"


_PAIRS = ("Referrals whose care started and that have a baseline {name} (the latest in the 90 "
          "days before the referral) and a follow-up {name} (the latest 4 to 12 weeks after "
          "care started)")
_ELIGIBLE = f"Pairs whose baseline is {ELEVATED_BASELINE} or more (at least moderate)"

DEFINITIONS: tuple[Definition, ...] = (
    Definition(
        "closed-loop-rate", "ClosedLoopRate", "Closed-loop rate",
        "The share of sent referrals whose loop closed: the service was delivered and the "
        "receiving organization reported the outcome back (referral Task completed with its "
        "outcome).", "proportion", "process", "increase",
        (Population("initial-population", "Referral Tasks made in the period", "total"),
         Population("denominator", SENT, "sent"),
         Population("numerator", "Sent referrals whose Task is completed", "completed")),
        "closed_loop_rate"),
    Definition(
        "median-time-to-accept", "MedianTimeToAccept", "Median time to accept",
        "The median time in hours from when a referral was made to when the receiving "
        "organization accepted it (the time each status began, from the Task history).",
        "continuous-variable", "process", "decrease",
        (Population("initial-population", SENT, "sent"),
         Population("measure-population", "Sent referrals that were accepted",
                    "time_to_accept_n")),
        "time_to_accept_median_h"),
    Definition(
        "response-rate", "ResponseRate", "Response rate",
        "Among referred patients with an elevated baseline, the share whose follow-up score "
        "dropped by half or more (measurement-based care), per instrument.",
        "proportion", "outcome", "increase",
        (Population("initial-population", _PAIRS, "{i}_pairs"),
         Population("denominator", _ELIGIBLE, "{i}_eligible"),
         Population("numerator", "Follow-up at most half the baseline", "{i}_responders")),
        "{i}_response_rate", per_instrument=True),
    Definition(
        "remission-rate", "RemissionRate", "Remission rate",
        "Among referred patients with an elevated baseline, the share whose follow-up score "
        "is below 5 (remission), per instrument.", "proportion", "outcome", "increase",
        (Population("initial-population", _PAIRS, "{i}_pairs"),
         Population("denominator", _ELIGIBLE, "{i}_eligible"),
         Population("numerator", "Follow-up score below 5", "{i}_remitters")),
        "{i}_remission_rate", per_instrument=True),
)
_BY_ID = {d.id: d for d in DEFINITIONS}


def definition(measure_id: str) -> Definition | None:
    return _BY_ID.get(measure_id)


def _instruments(definition_: Definition) -> list[tuple[str, str]]:
    """(prefix, name) per group: one group per instrument, or one group."""
    if definition_.per_instrument:
        return [(code.replace("-", ""), name) for code, (_loinc, name) in INSTRUMENTS.items()]
    return [("", "")]


def _code(system: str, code: str, display: str | None = None) -> dict:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def measure_resource(d: Definition) -> dict:
    """The Measure resource of a definition."""
    groups = []
    for prefix, name in _instruments(d):
        group: dict = {"population": [
            {"code": _code(POPULATION, p.code), "description": p.description.format(name=name),
             "criteria": {"language": "application/x-fhir-query", "expression": QUERY,
                          "description": f"The `{p.figure.replace('{i}', prefix)}` figure "
                                         "of the `all` group, with start and end set to "
                                         "the period"}}
            for p in d.populations]}
        if prefix:
            group["code"] = {"coding": [{"system": "http://loinc.org",
                                         "code": INSTRUMENTS[_instrument(prefix)][0]}],
                             "text": name}
            group["description"] = f"{d.title}, {name}"
        groups.append(group)
    return {
        "resourceType": "Measure", "id": d.id, "url": d.url, "version": VERSION,
        "name": d.name, "title": d.title, "status": "active", "experimental": False,
        "date": DATE, "publisher": "Closed-loop mental-health referral server",
        "description": d.description,
        "scoring": _code(SCORING, d.scoring),
        "type": [_code(MEASURE_TYPE, d.kind)],
        "improvementNotation": _code(IMPROVEMENT, d.improvement),
        "group": groups,
    }


def _instrument(prefix: str) -> str:
    return next(code for code in INSTRUMENTS if code.replace("-", "") == prefix)


def measure_resources() -> list[dict]:
    """Every Measure we publish (seeded on start)."""
    return [measure_resource(d) for d in DEFINITIONS]


# -- $evaluate-measure -----------------------------------------------------------------------
def _expression(name: str) -> str:
    return f"Parameters.parameter.where(name='{name}').value"


def parse_period(params: Sequence[tuple[str, str]]) -> tuple[int, int]:
    """[start, end) in epoch microseconds from periodStart / periodEnd (dates include the
    whole day); 400 when missing or malformed, and for parameters we do not support."""
    values: dict[str, list[str]] = {}
    for key, value in params:
        values.setdefault(key, []).append(value)
    for key in values:
        if key in ("subject", "practitioner", "lastReceivedOn") or key not in (
                "periodStart", "periodEnd", "reportType", "measure") and not key.startswith("_"):
            raise FhirError(400, "not-supported", f"$evaluate-measure parameter '{key}' is not "
                            "supported: this server reports on whole populations",
                            _expression(key))
    report_type = (values.get("reportType") or ["population"])[0]
    if report_type not in ("population", "summary"):
        raise FhirError(400, "not-supported", f"reportType '{report_type}' is not supported: "
                        "use population", _expression("reportType"))
    out = []
    for name in ("periodStart", "periodEnd"):
        given = values.get(name) or []
        if len(given) != 1:
            raise FhirError(400, "required", f"Give {name} once (a date, e.g. 2026-01-31)",
                            _expression(name))
        text = given[0].strip()
        at = instant_us(text)
        if at is None or (len(text) > 10 and "T" not in text):
            raise FhirError(400, "invalid", f"Invalid {name} '{text}'", _expression(name))
        if name == "periodEnd" and len(text) <= 10:
            at = _next_period(text, at)
        out.append(at)
    if out[1] <= out[0]:
        raise FhirError(400, "invalid", "periodEnd must not be before periodStart",
                        _expression("periodEnd"))
    return out[0], out[1]


def _next_period(text: str, at: int) -> int:
    """The exclusive end of a date given as periodEnd (the day, month or year after)."""
    start = datetime.fromtimestamp(at / 1_000_000, tz=UTC)
    if len(text) == 4:
        end = start.replace(year=start.year + 1)
    elif len(text) == 7:
        end = (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    else:
        end = start + timedelta(days=1)
    return int(end.timestamp() * 1_000_000)


def _population(code: str, count: Figure) -> dict:
    return {"code": _code(POPULATION, code), "count": count if isinstance(count, int) else 0}


def _score(d: Definition, value: Figure) -> dict | None:
    if value is None or isinstance(value, str):
        return None
    if d.scoring == "continuous-variable":
        return {"value": value, "unit": "h", "system": UCUM, "code": "h"}
    return {"value": value, "unit": "1", "system": UCUM, "code": "1"}


def _format(at: int) -> str:
    return datetime.fromtimestamp(at / 1_000_000, tz=UTC).isoformat().replace("+00:00", "Z")


def measure_report(d: Definition, result: Answer, params: Sequence[tuple[str, str]]
                   ) -> dict:
    """The summary MeasureReport for `d` from an answer grouped by `all` and `owner`."""
    overall = next(figs for group, figs, _name in result.groups if group.dimension == "all")
    owners = [(figs, name, group.key) for group, figs, name in result.groups
              if group.dimension == "owner"]
    groups = []
    for prefix, name in _instruments(d):
        def fig(template: str, figs: dict = overall, prefix: str = prefix) -> Figure:
            return figs.get(template.replace("{i}", prefix))

        group: dict = {"population": [_population(p.code, fig(p.figure))
                                      for p in d.populations]}
        score = _score(d, fig(d.score))
        if score is not None:
            group["measureScore"] = score
        if prefix:
            group["code"] = {"coding": [{"system": "http://loinc.org",
                                         "code": INSTRUMENTS[_instrument(prefix)][0]}],
                             "text": name}
        strata = []
        for figs, org_name, key in owners:
            stratum: dict = {"value": {"text": org_name},
                             "population": [_population(p.code, fig(p.figure, figs))
                                            for p in d.populations]}
            if "/" in key:
                stratum["value"]["coding"] = [{"system": f"{CANONICAL_BASE}/organization",
                                               "code": key, "display": org_name}]
            stratum_score = _score(d, fig(d.score, figs))
            if stratum_score is not None:
                stratum["measureScore"] = stratum_score
            strata.append(stratum)
        if strata:
            group["stratifier"] = [{"code": [{"text": "Receiving organization"}],
                                    "stratum": strata}]
        groups.append(group)
    start, end = result.query.start, result.query.end
    assert start is not None and end is not None
    return {
        "resourceType": "MeasureReport", "status": "complete", "type": "summary",
        "measure": f"{d.url}|{VERSION}",
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "period": {"start": _format(start), "end": _format(end - 1)},
        "improvementNotation": _code(IMPROVEMENT, d.improvement),
        "group": groups,
    }
