"""Scoring of PHQ-9, GAD-7, PHQ-2 and GAD-2: exhaustive, boundaries and bad input."""

from __future__ import annotations

import copy
import itertools
import json
import random

import jsonschema
import pytest
from fhir.resources.R4B.questionnaire import Questionnaire
from fhirpathpy import evaluate

from fhir_server.errors import FhirError
from mappers.screening import (
    check_questionnaire,
    raise_if_invalid,
    score_codes,
    score_response,
    validate_answers,
)
from mappers.screening_instruments import GAD7, INSTRUMENTS, PHQ9
from profiles.questionnaires import get_questionnaire, load_questionnaires
from tests.reference_data import QUESTIONNAIRES, fhir_schema

BASE = "http://mh-referral.example.org/fhir/Questionnaire"
ORDINAL = "http://hl7.org/fhir/StructureDefinition/ordinalValue"
LOINC = "http://loinc.org"


def questionnaire(key: str) -> dict:
    q = get_questionnaire(f"{BASE}/{key}|1.0.0")
    assert q is not None
    return q


def scored_items(q: dict) -> list[dict]:
    """Items with ordinalValue-scored options, read straight from the Questionnaire JSON."""
    return [i for i in q["item"] if any(
        e["url"] == ORDINAL for o in i.get("answerOption", []) for e in o.get("extension", []))]


def weights(item: dict) -> list[tuple[dict, int]]:
    """(valueCoding, weight) per option, from the JSON (independent of our scoring tables)."""
    out = []
    for opt in item["answerOption"]:
        w = next(e["valueDecimal"] for e in opt["extension"] if e["url"] == ORDINAL)
        out.append((opt["valueCoding"], int(w)))
    return out


def make_qr(q: dict, codings: dict[str, dict], status: str = "completed", **extra) -> dict:
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": f"{q['url']}|{q['version']}",
          "status": status, "subject": {"reference": "Patient/p1"},
          "authored": "2026-11-20T10:00:00Z",
          "item": [{"linkId": link, "answer": [{"valueCoding": dict(c)}]}
                   for link, c in codings.items()]}
    qr.update(extra)
    return qr


def answers_for(q: dict, indexes: tuple[int, ...]) -> dict[str, dict]:
    """Answer each scored item with the option whose weight is the given index."""
    out = {}
    for item, want in zip(scored_items(q), indexes, strict=True):
        out[item["linkId"]] = next(c for c, w in weights(item) if w == want)
    return out


# Independent band tables: one label per possible total, written out longhand.
PHQ9_BANDS = (["minimal"] * 5 + ["mild"] * 5 + ["moderate"] * 5 + ["moderately-severe"] * 5
              + ["severe"] * 8)
GAD7_BANDS = ["minimal"] * 5 + ["mild"] * 5 + ["moderate"] * 5 + ["severe"] * 7
SCREEN_BANDS = ["negative"] * 3 + ["positive"] * 4
EXPECTED_BANDS = {"phq-9": PHQ9_BANDS, "gad-7": GAD7_BANDS, "phq-2": SCREEN_BANDS,
                  "gad-2": SCREEN_BANDS}


# --------------------------------------------------------------------------- questionnaires


def test_questionnaires_load_and_look_up_by_url_and_version():
    qs = load_questionnaires()
    assert sorted(q["id"] for q in qs) == ["gad-2", "gad-7", "phq-2", "phq-9"]
    for q in qs:
        assert get_questionnaire(f"{q['url']}|{q['version']}")["id"] == q["id"]
        assert get_questionnaire(q["url"])["id"] == q["id"]
        assert get_questionnaire(f"{q['url']}|9.9.9") is None
    qs[0]["item"].clear()  # callers get copies
    assert load_questionnaires()[0]["item"]
    assert get_questionnaire("http://example.org/Questionnaire/other") is None


@pytest.mark.parametrize("key", ["phq-9", "gad-7", "phq-2", "gad-2"])
def test_our_questionnaires_are_the_instruments_they_claim(key):
    q = questionnaire(key)
    assert '"url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-' \
        'observationLinkPeriod"' not in json.dumps(q)
    assert {"url": "http://hl7.org/fhir/uv/sdc/StructureDefinition/"
            "sdc-questionnaire-observationExtract", "valueBoolean": True} in q["extension"]
    inst = INSTRUMENTS[key]
    assert check_questionnaire(q, inst) == []
    items = scored_items(q)
    assert [i["code"][0]["code"] for i in items] == list(inst.item_codes)
    for item in items:
        assert item["code"][0]["system"] == LOINC
        assert [(c["system"], w) for c, w in weights(item)] == [(LOINC, s) for s in range(4)]


def test_questionnaires_are_valid_r4():
    schema = fhir_schema()
    validator = jsonschema.validators.validator_for(schema)(
        {"$ref": "#/definitions/Questionnaire", "definitions": schema["definitions"]})
    for q in load_questionnaires():
        Questionnaire.model_validate(q)
        assert [e.message for e in validator.iter_errors(q)] == []


@pytest.mark.parametrize("key", ["phq-9", "gad-7", "phq-2", "gad-2"])
def test_calculated_expression_agrees_with_scorer(key):
    q = questionnaire(key)
    expr = next(e["valueExpression"]["expression"] for e in q["item"][-1]["extension"]
                if e["url"].endswith("calculatedExpression"))
    rng = random.Random(7)
    n = len(scored_items(q))
    for _ in range(8):
        idx = tuple(rng.randrange(4) for _ in range(n))
        qr = make_qr(q, answers_for(q, idx))
        assert evaluate(qr, expr, {"resource": qr}) == [sum(idx)]
        assert score_response(q, qr).total == sum(idx)
    partial = make_qr(q, dict(list(answers_for(q, (1,) * n).items())[:-1]))
    assert evaluate(partial, expr, {"resource": partial}) == []


# --------------------------------------------------------------------------- exhaustive


def test_phq9_all_262144_combinations():
    """Every PHQ-9 answer combination, against sums of the Questionnaire's own weights."""
    q = questionnaire("phq-9")
    options = [weights(i) for i in scored_items(q)]
    codes = [i["code"][0]["code"] for i in scored_items(q)]
    seen = 0
    histogram = [0] * 28
    for combo in itertools.product(range(4), repeat=9):
        answers = {codes[k]: options[k][combo[k]][0]["code"] for k in range(9)}
        expected = 0
        for k in range(9):
            expected += options[k][combo[k]][1]
        total, band, items = score_codes(PHQ9, answers)
        assert total == expected
        assert band.code == PHQ9_BANDS[expected]
        assert items[codes[8]] == combo[8]
        histogram[total] += 1
        seen += 1
    assert seen == 4 ** 9
    # Number of ways to reach each total: coefficients of (1+x+x^2+x^3)^9.
    poly = [1]
    for _ in range(9):
        poly = [sum(poly[j - d] for d in range(4) if 0 <= j - d < len(poly))
                for j in range(len(poly) + 3)]
    assert histogram == poly


def test_gad7_all_16384_combinations():
    """Every GAD-7 combination; item 2 'score 2' alternates LA6570-1 and LA18938-3."""
    q = questionnaire("gad-7")
    options = [weights(i) for i in scored_items(q)]
    codes = [i["code"][0]["code"] for i in scored_items(q)]
    count = 0
    for n, combo in enumerate(itertools.product(range(4), repeat=7)):
        answers = {codes[k]: options[k][combo[k]][0]["code"] for k in range(7)}
        if combo[1] == 2 and n % 2:
            answers["68509-9"] = "LA18938-3"
        expected = sum(options[k][combo[k]][1] for k in range(7))
        total, band, _items = score_codes(GAD7, answers)
        assert (total, band.code) == (expected, GAD7_BANDS[expected]), combo
        count += 1
    assert count == 4 ** 7


def test_gad7_sample_through_full_scoring():
    q = questionnaire("gad-7")
    rng = random.Random(7)
    combos = {tuple(rng.randrange(4) for _ in range(7)) for _ in range(1200)}
    for n, combo in enumerate(sorted(combos)):
        answers = answers_for(q, combo)
        if combo[1] == 2 and n % 2:
            answers["/68509-9"] = {"system": LOINC, "code": "LA18938-3",
                                   "display": "More days than not"}
        result = score_response(q, make_qr(q, answers))
        expected = sum(combo)
        assert (result.status, result.total, result.band.code) == (
            "complete", expected, GAD7_BANDS[expected]), combo
        assert result.item9 is None and not result.safety_flag


def test_phq9_sample_through_full_scoring():
    q = questionnaire("phq-9")
    rng = random.Random(2026)
    combos = {tuple(rng.randrange(4) for _ in range(9)) for _ in range(1500)}
    combos |= {(0,) * 8 + (v,) for v in range(4)} | {(3,) * 8 + (v,) for v in range(4)}
    for combo in combos:
        result = score_response(q, make_qr(q, answers_for(q, combo)))
        assert result.total == sum(combo)
        assert result.band.code == PHQ9_BANDS[sum(combo)]
        assert result.item9 == combo[8]
        assert result.safety_flag is (combo[8] > 0)
        assert result.self_harm_asked


@pytest.mark.parametrize("key", ["phq-2", "gad-2"])
def test_two_item_screens_all_combinations(key):
    q = questionnaire(key)
    for combo in itertools.product(range(4), repeat=2):
        result = score_response(q, make_qr(q, answers_for(q, combo)))
        assert result.total == sum(combo)
        assert result.band.code == ("positive" if sum(combo) >= 3 else "negative")
        assert not result.self_harm_asked and result.item9 is None


def test_phq2_records_that_self_harm_was_not_asked():
    q = questionnaire("phq-2")
    result = score_response(q, make_qr(q, answers_for(q, (0, 0))))
    assert result.band.code == "negative"
    assert any("self-harm was not assessed" in i.diagnostics for i in result.issues)
    gad = score_response(questionnaire("gad-2"), make_qr(questionnaire("gad-2"),
                                                         answers_for(questionnaire("gad-2"),
                                                                     (0, 0))))
    assert not any("self-harm" in i.diagnostics for i in gad.issues)


# --------------------------------------------------------------------------- boundaries


def _combo_for_total(n_items: int, total: int) -> tuple[int, ...]:
    out = []
    for _ in range(n_items):
        take = min(3, total)
        out.append(take)
        total -= take
    return tuple(out)


BOUNDARIES = [
    (key, t) for key, inst in INSTRUMENTS.items()
    for band in inst.bands for t in {band.low - 1, band.low, band.high, band.high + 1}
    if 0 <= t <= inst.max_total
]


@pytest.mark.parametrize(("key", "total"), BOUNDARIES)
def test_band_boundaries(key, total):
    q = questionnaire(key)
    combo = _combo_for_total(len(scored_items(q)), total)
    result = score_response(q, make_qr(q, answers_for(q, combo)))
    assert result.total == total
    assert result.band.code == EXPECTED_BANDS[key][total]


def test_band_for_rejects_impossible_totals():
    with pytest.raises(ValueError):
        PHQ9.band_for(28)
    with pytest.raises(ValueError):
        GAD7.band_for(-1)


# --------------------------------------------------------------------------- GAD-7 item 2


def test_gad7_item2_accepts_both_codes_for_two():
    q = questionnaire("gad-7")
    base = answers_for(q, (0, 2, 0, 0, 0, 0, 0))
    assert base["/68509-9"]["code"] == "LA6570-1"
    assert score_response(q, make_qr(q, base)).total == 2
    base["/68509-9"] = {"system": LOINC, "code": "LA18938-3", "display": "More days than not"}
    result = score_response(q, make_qr(q, base))
    assert (result.total, result.errors) == (2, [])
    # ... but only on item 2
    base["/69725-0"] = {"system": LOINC, "code": "LA18938-3"}
    bad = score_response(q, make_qr(q, base))
    assert bad.status == "invalid" and bad.total is None
    assert bad.errors[0].code == "code-invalid"
    assert bad.errors[0].expression == ["QuestionnaireResponse.item[0].answer[0].valueCoding"]


def test_lhc_forms_gad7_with_loinc_systems_scores_la18938_3():
    """The LHC-Forms export (defect fixed: systems added) offers LA18938-3 on item 2."""
    q = json.loads((QUESTIONNAIRES / "gad7.uwcirg.R4.questionnaire.json").read_text())
    assert score_response(q, {"status": "completed"}).status == "not-scored"  # no code system
    for item in [q, *q["item"]]:
        for c in item.get("code", []) + [o["valueCoding"] for o in item.get("answerOption", [])]:
            c["system"] = LOINC
    q["url"], q["version"] = "http://example.org/Questionnaire/gad7-lhc", "1"
    answers = {i["linkId"]: i["answerOption"][2]["valueCoding"] for i in q["item"][1:8]}
    assert answers["/68509-9"]["code"] == "LA18938-3"
    result = score_response(q, make_qr(q, answers))
    assert (result.instrument, result.total, result.band.code) == ("gad-7", 14, "moderate")


# --------------------------------------------------------------------------- missing items


def test_missing_item_gives_no_total_and_says_so():
    q = questionnaire("phq-9")
    answers = answers_for(q, (3,) * 9)
    del answers["/44259-0"]
    result = score_response(q, make_qr(q, answers))
    assert (result.status, result.total, result.band) == ("incomplete", None, None)
    assert result.missing_items == ["44259-0"]
    assert len(result.item_scores) == 8 and result.item9 == 3 and result.safety_flag
    assert result.errors == []
    assert {i.code for i in result.issues} >= {"incomplete", "required"}
    assert "incomplete, no total" in result.summary()


def test_missing_item9_means_self_harm_unknown_not_negative():
    q = questionnaire("phq-9")
    answers = answers_for(q, (0,) * 9)
    del answers["/44260-8"]
    result = score_response(q, make_qr(q, answers))
    assert result.item9 is None and not result.safety_flag and not result.self_harm_asked
    assert any("self-harm risk is unknown" in i.diagnostics for i in result.issues)


def test_in_progress_response_has_no_required_warnings():
    q = questionnaire("gad-7")
    qr = make_qr(q, dict(list(answers_for(q, (1,) * 7).items())[:3]), status="in-progress")
    assert validate_answers(q, qr) == []
    result = score_response(q, qr)
    assert result.status == "incomplete" and result.total is None


# --------------------------------------------------------------------------- bad input


def test_phq8_questionnaire_presented_as_phq9_is_refused():
    q = questionnaire("phq-9")
    q["item"] = [i for i in q["item"] if i["linkId"] != "/44260-8"]
    qr = make_qr(q, answers_for(questionnaire("phq-9"), (1,) * 9))
    qr["item"] = qr["item"][:8]
    result = score_response(q, qr)
    assert result.status == "invalid" and result.total is None
    assert "PHQ-8" in result.errors[0].diagnostics


def test_phq8_response_with_its_own_total_is_refused():
    q = questionnaire("phq-9")
    qr = make_qr(q, dict(list(answers_for(q, (2,) * 9).items())[:8]))
    qr["item"].append({"linkId": "/44261-6", "answer": [{"valueInteger": 16}]})
    result = score_response(q, qr)
    assert result.status == "invalid" and result.total is None
    assert any("44260-8" in i.diagnostics and i.severity == "error" for i in result.issues)


def test_duplicate_link_ids():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"].append(copy.deepcopy(qr["item"][0]))
    result = score_response(q, qr)
    assert result.status == "invalid" and result.total is None
    err = result.errors[0]
    assert err.code == "duplicate" and err.expression == ["QuestionnaireResponse.item[9].linkId"]


@pytest.mark.parametrize("coding", [
    {"system": LOINC, "code": "LA9999-9"},
    {"system": "http://snomed.info/sct", "code": "LA6569-3"},
    {"code": "LA6569-3"},
    {"system": LOINC, "code": "LA6573-5"},  # a difficulty answer on a frequency item
])
def test_codes_outside_the_options(coding):
    q = questionnaire("phq-9")
    answers = answers_for(q, (1,) * 9)
    answers["/44254-1"] = coding
    result = score_response(q, make_qr(q, answers))
    assert result.status == "invalid" and result.total is None
    assert result.errors[0].code == "code-invalid"
    assert result.errors[0].expression == ["QuestionnaireResponse.item[3].answer[0].valueCoding"]


@pytest.mark.parametrize(("answer", "needle"), [
    ({"valueInteger": 2}, "cannot take valueInteger"),
    ({"valueDecimal": 1.5}, "cannot take valueDecimal"),
    ({"valueString": "Several days"}, "cannot take valueString"),
    ({}, "exactly one value"),
    ({"valueCoding": {"system": LOINC}}, "Coding with a code"),
])
def test_wrong_answer_types(answer, needle):
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"][2]["answer"] = [answer]
    result = score_response(q, qr)
    assert result.total is None and result.status == "invalid"
    assert needle in result.errors[0].diagnostics


def test_unknown_link_id_and_multiple_answers():
    q = questionnaire("gad-7")
    qr = make_qr(q, answers_for(q, (1,) * 7))
    qr["item"].append({"linkId": "/12345-6", "answer": [{"valueString": "x"}]})
    qr["item"][0]["answer"].append(copy.deepcopy(qr["item"][0]["answer"][0]))
    issues = validate_answers(q, qr)
    assert {i.code for i in issues if i.severity == "error"} == {"invalid", "structure"}
    assert score_response(q, qr).total is None


@pytest.mark.parametrize(("value", "needle"), [
    ({"valueInteger": 12.5}, "must be an integer"),
    ({"valueInteger": 13}, "add up to 9"),
    ({"valueDecimal": 9}, "cannot take valueDecimal"),
])
def test_client_total_is_checked_never_trusted(value, needle):
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"].append({"linkId": "/44261-6", "answer": [value]})
    result = score_response(q, qr)
    assert result.total is None and needle in result.errors[0].diagnostics
    qr["item"][-1]["answer"] = [{"valueInteger": 9}]
    assert score_response(q, qr).total == 9


def test_non_integer_scores_from_a_decimal_total_item():
    """US Core's PHQ-9 has a decimal total item: 12.5 is refused, 12 (its example) accepted."""
    root = QUESTIONNAIRES
    q = json.loads((root / "phq9.us-core.questionnaire.json").read_text())
    qr = json.loads((root / "phq9.us-core.questionnaireresponse.json").read_text())
    ok = score_response(q, qr)
    assert (ok.status, ok.total, ok.band.code, ok.item9) == ("complete", 12, "moderate", 0)
    total_item = next(i for i in qr["item"] if i["linkId"] == "/44261-6")
    total_item["answer"] = [{"valueDecimal": 12.5}]
    bad = score_response(q, qr)
    assert bad.total is None and "Non-integer total" in bad.errors[0].diagnostics


def test_non_integer_weights_on_answers_or_options():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"][0]["answer"][0]["extension"] = [{"url": ORDINAL, "valueDecimal": 1.5}]
    result = score_response(q, qr)
    assert result.total is None and "Non-integer score" in result.errors[0].diagnostics
    qr["item"][0]["answer"][0]["extension"] = [{"url": ORDINAL, "valueDecimal": 2}]
    assert "carries score 2" in score_response(q, qr).errors[0].diagnostics
    qr["item"][0]["answer"][0]["extension"] = [{"url": ORDINAL, "valueDecimal": 1}]
    assert score_response(q, qr).total == 9
    bad_q = questionnaire("phq-9")
    bad_q["item"][0]["answerOption"][1]["extension"][0]["valueDecimal"] = 1.5
    assert "weight 1.5" in score_response(bad_q, make_qr(bad_q, answers_for(q, (1,) * 9))
                                          ).errors[0].diagnostics


def test_unknown_questionnaire_is_not_scored_and_says_so():
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed",
          "questionnaire": "http://example.org/Questionnaire/unknown"}
    result = score_response(None, qr)
    assert (result.status, result.instrument, result.total) == ("not-scored", None, None)
    assert result.issues[0].code == "not-found" and "not scored" in result.issues[0].diagnostics
    other = {"resourceType": "Questionnaire", "url": "http://example.org/Questionnaire/intake",
             "status": "active", "item": []}
    assert score_response(other, qr).status == "not-scored"


def test_questionnaire_reference_must_match():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9), questionnaire=f"{BASE}/gad-7|1.0.0")
    result = score_response(q, qr)
    assert result.total is None and result.errors[0].expression == [
        "QuestionnaireResponse.questionnaire"]
    qr["questionnaire"] = f"{BASE}/phq-9|0.9"
    assert score_response(q, qr).status == "invalid"
    qr["questionnaire"] = f"{BASE}/phq-9"
    assert score_response(q, qr).total == 9


def test_raise_if_invalid_gives_a_422_with_every_issue():
    q = questionnaire("phq-9")
    answers = answers_for(q, (1,) * 9)
    answers["/44250-9"] = {"system": LOINC, "code": "nope"}
    answers["/44255-8"] = {"system": LOINC, "code": "nope"}
    result = score_response(q, make_qr(q, answers))
    with pytest.raises(FhirError) as info:
        raise_if_invalid(result.issues)
    assert info.value.status == 422
    outcome = info.value.outcome()
    assert len([i for i in outcome["issue"] if i["severity"] == "error"]) == 2
    raise_if_invalid([])  # nothing to raise


def triples(issues) -> list[tuple[str, str, list[str]]]:
    """(severity, code, expression) of each issue: what a client acts on."""
    return [(i.severity, i.code, i.expression) for i in issues]


def test_complete_result_fields_and_answer_paths():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (0, 1, 2, 3, 0, 1, 2, 3, 1)))
    qr["item"][0]["text"] = "client text, not used when the Questionnaire has one"
    result = score_response(q, qr)
    assert (result.status, result.total, result.item9, result.safety_flag) == (
        "complete", 13, 1, True)
    assert result.questionnaire == f"{BASE}/phq-9|1.0.0"
    assert result.max_total == 27 and result.issues == []
    first = result.answers[0]
    assert first.path == "QuestionnaireResponse.item[0].answer[0].valueCoding"
    assert first.text == q["item"][0]["text"] and first.score == 0
    assert [a.score for a in result.answers] == [0, 1, 2, 3, 0, 1, 2, 3, 1]
    assert result.summary() == ("Patient Health Questionnaire-9 (PHQ-9) total 13/27: Moderate "
                                "depression (PHQ-9 10-14); item 9 (self-harm) answered 1: "
                                "safety flag raised")
    assert triples(result.outcome_issues()) == [("information", "informational", [])]


def test_incomplete_and_unasked_issues():
    q = questionnaire("phq-9")
    codings = answers_for(q, (1,) * 9)
    del codings["/44260-8"]
    result = score_response(q, make_qr(q, codings))
    assert (result.status, result.item9, result.self_harm_asked) == ("incomplete", None, False)
    assert triples(result.issues) == [
        ("warning", "required", ["QuestionnaireResponse.item"]),
        ("warning", "incomplete", ["QuestionnaireResponse.item"]),
        ("warning", "incomplete", ["QuestionnaireResponse.item"])]
    q2 = questionnaire("phq-2")
    screen = score_response(q2, make_qr(q2, answers_for(q2, (1, 1))))
    assert triples(screen.issues) == [("information", "informational", ["QuestionnaireResponse"])]
    no_subject = make_qr(q2, answers_for(q2, (1, 1)))
    del no_subject["subject"]
    assert triples(score_response(q2, no_subject).issues)[-1] == (
        "warning", "required", ["QuestionnaireResponse.subject"])


def test_not_scored_results_name_the_questionnaire():
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed",
          "questionnaire": "http://example.org/Questionnaire/unknown"}
    unknown = score_response(None, qr)
    assert unknown.questionnaire == "http://example.org/Questionnaire/unknown"
    assert triples(unknown.issues) == [
        ("warning", "not-found", ["QuestionnaireResponse.questionnaire"])]
    other = {"resourceType": "Questionnaire", "url": "http://example.org/Questionnaire/intake",
             "status": "active", "item": []}
    result = score_response(other, qr)
    assert result.questionnaire == "http://example.org/Questionnaire/intake"
    assert triples(result.issues) == [
        ("warning", "informational", ["QuestionnaireResponse.questionnaire"])]
    assert "'http://example.org/Questionnaire/intake'" in result.issues[0].diagnostics
    assert result.summary() == "Response stored without scoring"


def test_questionnaire_check_issues_are_exact():
    q = questionnaire("phq-9")
    del q["url"]
    q["id"] = "my-phq9"
    first = q["item"][0]
    first["answerOption"].append({"valueCoding": {"system": "http://x", "code": "0"}})
    first["answerOption"][3]["valueCoding"]["extension"] = [
        {"url": ORDINAL, "valueInteger": 2}]
    del first["answerOption"][3]["extension"]
    issues = check_questionnaire(q, PHQ9)
    assert triples(issues) == [("error", "business-rule", ["Questionnaire.item"])] * 2
    assert [i.diagnostics for i in issues] == [
        "Questionnaire my-phq9 item '/44250-9' gives LA6571-9 the weight 2; the instrument "
        "defines 3",
        "Questionnaire my-phq9 item '/44250-9' offers '0', which is not a LOINC answer code "
        "(system 'http://x')"]
    twice = questionnaire("phq-9")
    twice["item"].append(dict(copy.deepcopy(twice["item"][0]), linkId="again"))
    assert [i.diagnostics for i in check_questionnaire(twice, PHQ9)] == [
        f"Questionnaire {BASE}/phq-9 has 2 items coded 44250-9"]
    typed = questionnaire("phq-9")
    typed["item"][1]["type"] = "open-choice"
    assert [i.diagnostics for i in check_questionnaire(typed, PHQ9)] == [
        f"Questionnaire {BASE}/phq-9 item '/44255-8' must be a choice item with answer options"]


def test_client_total_issues_are_exact():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"].append({"linkId": "/44261-6", "answer": [{"valueInteger": 13}]})
    result = score_response(q, qr)
    assert triples(result.errors) == [("error", "value", [
        "QuestionnaireResponse.item[9].answer[0].valueInteger"])]
    assert result.errors[0].diagnostics == (
        "The response states a total of 13 but its answers add up to 9")
    del qr["item"][0]
    qr["item"][-1]["answer"] = [{"valueInteger": 8}]
    missing = score_response(q, qr)
    assert missing.errors[0].diagnostics == (
        "A total of 8 was sent but items 44250-9 are unanswered; a Patient Health "
        "Questionnaire-9 (PHQ-9) total needs every item")
    assert missing.status == "invalid" and missing.total is None


def test_answer_weight_issues_are_exact():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"][2]["answer"][0]["valueCoding"]["extension"] = [{"url": ORDINAL,
                                                               "valueInteger": 3}]
    result = score_response(q, qr)
    path = "QuestionnaireResponse.item[2].answer[0].valueCoding"
    assert triples(result.errors) == [("error", "value", [path])]
    assert result.errors[0].diagnostics == (
        "The answer to '/44259-0' carries score 3; its code scores 1")
    assert (result.total, result.item_scores, result.item9) == (None, {}, None)
    qr["item"][2]["answer"][0]["valueCoding"]["extension"] = [{"url": ORDINAL,
                                                               "valueDecimal": 0.5}]
    assert triples(score_response(q, qr).errors) == [("error", "value", [path])]


def test_only_fatal_issue_still_raises():
    from fhir_server.errors import Issue
    with pytest.raises(FhirError) as info:
        raise_if_invalid([Issue("warning", "incomplete", "w"), Issue("fatal", "exception", "f")])
    assert info.value.status == 422
    assert [i.severity for i in info.value.issues] == ["warning", "fatal"]


def test_client_total_forms_and_messages():
    q = questionnaire("phq-9")
    qr = make_qr(q, answers_for(q, (1,) * 9))
    qr["item"].append({"linkId": "/44261-6", "answer": [{"valueInteger": 12.5}]})
    assert triples(score_response(q, qr).errors) == [
        ("error", "value", ["QuestionnaireResponse.item[9].answer[0].valueInteger"])]
    del qr["item"][0:2]
    qr["item"][-1]["answer"] = [{"valueInteger": 7}]
    assert score_response(q, qr).errors[0].diagnostics.startswith(
        "A total of 7 was sent but items 44250-9, 44255-8 are unanswered")
    quantity_q = questionnaire("phq-9")
    total_item = next(i for i in quantity_q["item"] if i["linkId"] == "/44261-6")
    total_item["type"] = "quantity"
    total_item.pop("extension", None)
    as_quantity = make_qr(quantity_q, answers_for(quantity_q, (1,) * 9))
    as_quantity["item"].append({"linkId": "/44261-6", "answer": [
        {"valueQuantity": {"value": 9, "unit": "{score}"}}]})
    result = score_response(quantity_q, as_quantity)
    assert (result.errors, result.total) == ([], 9)
    as_quantity["item"][-1]["answer"][0]["valueQuantity"]["value"] = 10
    assert "states a total of 10" in score_response(quantity_q, as_quantity).errors[0].diagnostics


def test_subject_warning_text_and_canonical_of_unscored():
    q2 = questionnaire("phq-2")
    qr = make_qr(q2, answers_for(q2, (1, 1)))
    del qr["subject"]
    assert score_response(q2, qr).issues[-1].diagnostics == (
        "QuestionnaireResponse.subject is missing: Observations extracted from it cannot name "
        "the patient (US Core requires a subject)")
    anonymous = {"resourceType": "Questionnaire", "status": "active", "item": []}
    unscored = score_response(anonymous, {**qr, "questionnaire": "urn:uuid:q1"})
    assert unscored.questionnaire == "urn:uuid:q1"
