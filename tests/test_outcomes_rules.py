"""The pure rules of the outcome measures: facts from a Task's history, equity codes, small
cells, scores and pairs, the follow-up screening request, the published Measures."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fhir.resources.R4B.measure import Measure
from fhir.resources.R4B.task import Task

from fhir_server.errors import FhirError
from fhir_server.workflow import equity, follow_up, measurement, measures, metrics
from fhir_server.workflow.canonical import PATIENT_TASK_PROFILE
from fhir_server.workflow.referral_facts import advance, from_history, instant_us, outcome_of
from tests.test_workflow_task_rules import make_task

US = 1_000_000
H = 3600 * US


def test_facts_keep_the_time_each_status_began():
    versions = [(0, make_task("draft")), (1 * H, make_task("requested")),
                (2 * H, make_task("requested")),  # an edit: the status began earlier
                (5 * H, make_task("accepted")), (9 * H, make_task("in-progress")),
                (10 * H, make_task("on-hold", statusReason={"text": "away"})),
                (11 * H, make_task("in-progress")), (30 * H, make_task("completed"))]
    facts = from_history(versions)
    assert (facts.requested_at, facts.accepted_at, facts.started_at, facts.completed_at,
            facts.ended_at) == (1 * H, 5 * H, 9 * H, 30 * H, 30 * H)
    assert facts.referred_at == 1 * H and facts.first_at == 0 and facts.status_since == 30 * H
    incremental = None
    for at, body in versions:
        incremental = advance(incremental, body, at)
    assert incremental == facts
    assert from_history([(0, make_task()), (1, None)]) is None  # deleted now


def test_outcome_classes():
    assert outcome_of("rejected", redirected=True) == "redirected"
    assert outcome_of("rejected", redirected=False) == "rejected"
    assert outcome_of("on-hold", False) == outcome_of("in-progress", False) == "in-care"
    assert outcome_of("requested", False) == "waiting"
    assert outcome_of("received", False) == "entered-in-error"  # not a referral status


def test_instants():
    assert instant_us("2026-01-05") == int(datetime(2026, 1, 5, tzinfo=UTC).timestamp() * US)
    assert instant_us("2026-01-05T10:00:00+02:00") == int(
        datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp() * US)
    assert instant_us("yesterday") is None and instant_us(None) is None


RACE = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"


def omb(url: str, *codes: str, system: str = equity.CDC_RACE_ETHNICITY) -> dict:
    return {"url": url, "extension": [{"url": "ombCategory", "valueCoding": {
        "system": system, "code": c}} for c in codes] + [{"url": "text", "valueString": "x"}]}


def test_equity_codes_of_a_patient():
    patient = {"resourceType": "Patient", "gender": "female", "birthDate": "1990-07-15",
               "extension": [omb(RACE, "2054-5"), omb(ETHNICITY, "2135-2")],
               "communication": [{"language": {"coding": [{"code": "en"}]}},
                                 {"language": {"coding": [{"code": "es-MX"}]},
                                  "preferred": True}]}
    demo = equity.demographics(patient)
    assert demo == equity.Demographics(19900715, "female", "black", "hispanic", "es")
    assert equity.race_of({"extension": [omb(RACE, "2054-5", "2106-3")]}) == "multiple"
    assert equity.race_of({"extension": [omb(RACE, "ASKU", system=equity.NULL_FLAVOR)]}) \
        == "declined"
    assert equity.race_of({}) == equity.ethnicity_of({}) == "unknown"
    assert equity.language_of({"communication": [{"language": {"coding": [
        {"code": "vi"}]}}]}) == "vi"  # none preferred: the first
    assert equity.demographics(None).sex == "unknown"
    assert equity.label("language", "es") == "Spanish"
    assert equity.label("race", "black") == "Black or African American"


def test_age_bands_on_the_day_of_the_referral():
    assert equity.age_on(19900715, 20080714) == 17
    assert equity.age_on(19900715, 20080715) == 18
    assert [equity.age_band(a) for a in (0, 17, 18, 25, 26, 44, 45, 64, 65, 99, None)] == [
        "0-17", "0-17", "18-25", "18-25", "26-44", "26-44", "45-64", "45-64", "65+", "65+",
        "unknown"]


def test_coverage_type_and_choice():
    def coverage(system: str, code: str, **extra) -> dict:
        return {"status": "active", "type": {"coding": [{"system": system, "code": code}]},
                **extra}

    assert equity.coverage_type(coverage(equity.PAYER_TYPE, "sliding-fee")) == "self-pay"
    assert equity.coverage_type(coverage(equity.SOURCE_OF_PAYMENT, "21")) == "medicaid"
    assert equity.coverage_type(coverage(equity.SOURCE_OF_PAYMENT, "511")) == "private"
    assert equity.coverage_type(coverage(equity.ACT_CODE, "PUBLICPOL")) == "other-public"
    assert equity.coverage_type({"type": {"text": "??"}}) == "other"
    chosen = equity.choose_coverage([
        (1, coverage(equity.PAYER_TYPE, "private", order=2)),
        (2, coverage(equity.PAYER_TYPE, "medicaid", order=1)),
        (3, {**coverage(equity.PAYER_TYPE, "medicare"), "status": "cancelled"})])
    assert chosen == (2, "medicaid")
    assert equity.choose_coverage([]) == (None, "none")


def test_small_cells():
    assert [equity.suppress(n, 11) for n in (0, 1, 10, 11, 40)] == [0, "<11", "<11", 11, 40]
    assert equity.suppress(3, 0) == 3 and equity.suppress(3, 1) == 3


def _row(patient: str, **values) -> tuple:
    base = {"status": "completed", "redirected": False, "referred_at": 0,
            "accepted_at": H, "started_at": 2 * H, "completed_at": 3 * H,
            "patient_id": patient, "priority": "routine"}
    base.update(values)
    return tuple(base.get(c) for c in metrics.COLUMNS)


def test_a_lone_small_group_hides_the_next_smallest_too():
    rows = ([_row(f"f{i}", sex="female") for i in range(30)]
            + [_row(f"m{i}", sex="male") for i in range(12)]
            + [_row(f"o{i}", sex="other") for i in range(2)])
    answer = metrics.answer(rows, metrics.MetricsQuery(("all", "sex")), {}, 11)
    figs = {g.key: f for g, f, _n in answer.groups if g.dimension == "sex"}
    assert figs["other"]["patients"] == "<11" and figs["other"]["closed_loop_rate"] is None
    assert figs["male"]["patients"] == "suppressed" and figs["male"]["total"] == "suppressed"
    assert figs["female"]["patients"] == 30 and figs["female"]["closed_loop_rate"] == 1.0
    everyone = next(f for g, f, _n in answer.groups if g.dimension == "all")
    assert everyone["patients"] == 44  # totals are not an equity cell
    shown = metrics.answer(rows, metrics.MetricsQuery(("sex",)), {}, 0)
    assert {g.key: f["patients"] for g, f, _n in shown.groups if g.dimension == "sex"} == {
        "female": 30, "male": 12, "other": 2}


def test_rates_on_small_numbers_are_left_out():
    rows = ([_row(f"p{i}", sex="female") for i in range(20)]
            + [_row(f"q{i}", sex="female", status="rejected", accepted_at=None,
                    started_at=None, completed_at=None) for i in range(3)])
    figs = next(f for g, f, _n in metrics.answer(
        rows, metrics.MetricsQuery(("sex",)), {}, 11).groups if g.dimension == "sex")
    assert figs["outcome_rejected"] == "<11"
    assert figs["acceptance_rate"] is None  # 20 / 23: the 3 rejected would show
    assert figs["time_to_accept_median_h"] == 1.0  # 20 durations


def test_scores_and_pairs():
    obs = {"resourceType": "Observation", "status": "final",
           "code": {"coding": [{"system": "http://loinc.org", "code": "44261-6"}]},
           "valueQuantity": {"value": 14}, "effectiveDateTime": "2026-01-05"}
    assert measurement.score_of(obs, 5) == measurement.Score("phq-9", 14, 5)
    assert measurement.score_of({**obs, "status": "preliminary"}, 5) is None
    assert measurement.score_of({**obs, "valueQuantity": {"value": 3.5}}, 5) is None
    assert measurement.score_of({**obs, "code": {"coding": [
        {"system": "http://loinc.org", "code": "70274-6"}]}, "valueInteger": 9}, 1).value == 9
    pairs = measurement.Pairs()
    for base, follow in ((20, 10), (20, 11), (12, 4), (8, 2)):
        pairs.add(base, follow)
    assert (pairs.count, pairs.eligible, pairs.responders, pairs.remitters) == (4, 3, 2, 1)
    assert pairs.mean_change == (-10 - 9 - 8 - 6) / 4
    week = 7 * 24 * H
    assert measurement.follow_up_window(0) == (4 * week, 12 * week)
    scores = [measurement.Score("phq-9", 9, 4 * week), measurement.Score("phq-9", 5, 12 * week),
              measurement.Score("phq-9", 1, 12 * week + 1)]
    assert measurement.latest_in(scores, "phq-9", *measurement.follow_up_window(0)).value == 5


def test_follow_up_request_is_a_valid_patient_task():
    referral = make_task("in-progress", id="t9")
    started = datetime(2026, 3, 2, 10, tzinfo=UTC)
    task = follow_up.follow_up_task(referral, "phq-9", started, 6)
    Task.model_validate(task)
    assert task["meta"]["profile"] == [PATIENT_TASK_PROFILE]
    assert task["owner"] == task["for"] == {"reference": "Patient/p1"}
    assert task["partOf"] == [{"reference": "Task/t9"}]
    assert task["restriction"]["period"] == {"start": "2026-04-13T10:00:00Z",
                                             "end": "2026-05-25T10:00:00Z"}
    assert follow_up.is_follow_up(task) and not follow_up.is_follow_up(referral)
    assert follow_up.check_weeks(0) == 0 and follow_up.check_weeks(12) == 12
    with pytest.raises(ValueError, match="4 to 12"):
        follow_up.check_weeks(2)


def test_published_measures_are_valid_fhir():
    published = measures.measure_resources()
    assert [m["id"] for m in published] == ["closed-loop-rate", "median-time-to-accept",
                                            "response-rate", "remission-rate"]
    for measure in published:
        Measure.model_validate(measure)
    assert len(published[2]["group"]) == 2  # PHQ-9 and GAD-7


def test_measure_period():
    day = 24 * H
    start, end = measures.parse_period([("periodStart", "2026-01-01"),
                                        ("periodEnd", "2026-01-31")])
    assert end - start == 31 * day
    start, end = measures.parse_period([("periodStart", "2026"), ("periodEnd", "2026")])
    assert end - start == 365 * day
    with pytest.raises(FhirError) as missing:
        measures.parse_period([("periodStart", "2026-01-01")])
    assert missing.value.status == 400


def test_query_parameters():
    query = metrics.parse_query([("group-by", "owner,sex"), ("group-by", "month"),
                                 ("owner", "Organization/a,Organization/b")])
    assert query.dimensions == ("all", "owner", "sex", "month")
    assert query.filter("owner") == ("Organization/a", "Organization/b")
    assert metrics.parse_query([("owner", "Organization/a")]).dimensions == ("all", "owner")
    assert metrics.parse_query([]).dimensions == ("all", "requester")
    assert metrics.parse_query([("start", "2026-01-01T00:00:00Z")]).start == instant_us(
        "2026-01-01")
    for bad in ([("group-by", "shoe-size")], [("start", "2026-01-01T10:00")],
                [("start", "2026-02-01"), ("end", "2026-01-01")], [("color", "x")]):
        with pytest.raises(FhirError) as error:
            metrics.parse_query(bad)
        assert error.value.status == 400
