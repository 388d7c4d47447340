"""Observations, safety Flag/Task, amendment and care recommendation from scored QRs."""

from __future__ import annotations

import copy
import functools
import itertools
import json

import jsonschema
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.flag import Flag
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.parameters import Parameters
from fhir.resources.R4B.task import Task

from fhir_server.errors import FhirError
from mappers.care_recommendation import (
    CARE_TABLE,
    active_safety_flags,
    recommend_care,
    referral_priority_floor,
)
from mappers.screening import score_response
from mappers.screening_extract import (
    extract_bundle,
    extract_observations,
    find_entry,
    item9_reference,
    safety_resources,
    supersede,
    supersede_safety_flags,
)
from profiles.questionnaires import get_questionnaire
from tests.reference_data import fhir_schema

BASE = "http://mh-referral.example.org/fhir/Questionnaire"
LOINC = "http://loinc.org"
FREQ = ["LA6568-5", "LA6569-3", "LA6570-1", "LA6571-9"]
MODELS = {"Observation": Observation, "Flag": Flag, "Task": Task}


@pytest.fixture(scope="module")
def schema_validator():
    schema = fhir_schema()
    cls = jsonschema.validators.validator_for(schema)
    return lambda rtype: cls({"$ref": f"#/definitions/{rtype}",
                              "definitions": schema["definitions"]})


@functools.cache
def q(key: str) -> dict:
    """Our Questionnaire (cached: tests must not mutate it)."""
    return get_questionnaire(f"{BASE}/{key}|1.0.0")


def counter():
    ids = (f"00000000-0000-4000-8000-{n:012d}" for n in itertools.count(1))
    return lambda: next(ids)


def qr_for(key: str, scores: list[int | None], *, status: str = "completed",
           difficulty: str | None = None, **extra) -> dict:
    questionnaire = q(key)
    items = []
    scored = [i for i in questionnaire["item"] if i.get("required")]
    for item, score in zip(scored, scores, strict=True):
        if score is not None:
            coding = dict(item["answerOption"][score]["valueCoding"])
            items.append({"linkId": item["linkId"], "answer": [{"valueCoding": coding}]})
    if difficulty:
        items.append({"linkId": "/69722-7", "answer": [{"valueCoding": {
            "system": LOINC, "code": difficulty}}]})
    qr = {"resourceType": "QuestionnaireResponse", "id": "qr1",
          "questionnaire": f"{BASE}/{key}|1.0.0", "status": status,
          "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"},
          "authored": "2026-11-20T10:00:00Z", "author": {"reference": "Practitioner/dr1"},
          "item": items}
    qr.update(extra)
    return qr


def scored(key: str, scores: list[int | None], **kw):
    qr = qr_for(key, scores, **kw)
    return qr, score_response(q(key), qr)


def check_valid(resource: dict, validator) -> None:
    """Valid R4: the fhir.resources R4B model and the official R4 JSON schema both accept it."""
    MODELS[resource["resourceType"]].model_validate(resource)
    errors = list(validator(resource["resourceType"]).iter_errors(resource))
    assert errors == [], [e.message for e in errors]


# --------------------------------------------------------------------------- observations


def test_phq9_observations_shape(schema_validator):
    qr, result = scored("phq-9", [1, 2, 3, 0, 1, 2, 3, 0, 1], difficulty="LA6575-0")
    entries = extract_observations(qr, result, id_factory=counter())
    assert len(entries) == 1 + 9 + 1 + 1  # panel, items, difficulty, total
    urls = [e["fullUrl"] for e in entries]
    assert all(u.startswith("urn:uuid:") for u in urls) and len(set(urls)) == len(urls)
    for entry in entries:
        obs = entry["resource"]
        check_valid(obs, schema_validator)
        assert entry["request"] == {"method": "POST", "url": "Observation"}
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0]["code"] == "survey"
        assert obs["subject"] == {"reference": "Patient/p1"}
        assert obs["encounter"] == {"reference": "Encounter/e1"}
        assert obs["performer"] == [{"reference": "Practitioner/dr1"}]
        assert obs["effectiveDateTime"] == "2026-11-20T10:00:00Z"
        assert obs["derivedFrom"] == [{"reference": "QuestionnaireResponse/qr1"}]
    panel = entries[0]["resource"]
    assert panel["code"]["coding"][0]["code"] == "44249-1"
    assert "value" not in "".join(panel)  # no value[x] on the panel
    assert [m["reference"] for m in panel["hasMember"]] == urls[1:]
    total = find_entry(entries, "44261-6")["resource"]
    assert total["valueQuantity"] == {"value": 13, "unit": "{score}",
                                      "system": "http://unitsofmeasure.org", "code": "{score}"}
    assert total["interpretation"][0]["coding"][0]["code"] == "moderate"
    item9 = find_entry(entries, "44260-8")["resource"]
    assert item9["valueCodeableConcept"]["coding"][0] == {
        "system": LOINC, "code": "LA6569-3", "display": "Several days"}
    assert find_entry(entries, "69722-7")["resource"]["valueCodeableConcept"]["coding"][0][
        "code"] == "LA6575-0"
    assert item9_reference(entries) == find_entry(entries, "44260-8")["fullUrl"]


def test_extract_bundle_is_a_valid_transaction(schema_validator):
    qr, result = scored("gad-7", [3, 3, 3, 3, 3, 2, 0])
    bundle = extract_bundle(qr, result, id_factory=counter(),
                            qr_reference="urn:uuid:11111111-1111-4111-8111-111111111111")
    Bundle.model_validate(bundle)
    errors = list(schema_validator("Bundle").iter_errors(bundle))
    assert errors == [], [e.message for e in errors]
    assert bundle["type"] == "transaction" and len(bundle["entry"]) == 9
    total = find_entry(bundle["entry"], "70274-6")["resource"]
    assert total["valueQuantity"]["value"] == 17
    assert total["interpretation"][0]["coding"][0]["code"] == "severe"
    assert total["derivedFrom"] == [{"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}]
    assert find_entry(bundle["entry"], "44260-8") is None


def test_incomplete_response_has_items_but_no_total(schema_validator):
    qr, result = scored("phq-9", [1, 1, None, 1, 1, 1, 1, 1, None], status="in-progress")
    entries = extract_observations(qr, result, id_factory=counter())
    assert find_entry(entries, "44261-6") is None
    assert len(entries) == 1 + 7
    panel = entries[0]["resource"]
    check_valid(panel, schema_validator)
    assert panel["status"] == "preliminary"
    notes = " ".join(n["text"] for n in panel["note"])
    assert "no total" in notes and "44259-0" in notes and "risk unknown" in notes


def test_phq2_records_self_harm_not_asked(schema_validator):
    qr, result = scored("phq-2", [0, 1])
    entries = extract_observations(qr, result, id_factory=counter())
    panel = entries[0]["resource"]
    check_valid(panel, schema_validator)
    assert panel["code"]["coding"][0]["code"] == "55757-9"
    component = panel["component"][0]
    assert component["code"]["coding"][0]["code"] == "44260-8"
    assert component["dataAbsentReason"]["coding"][0]["code"] == "not-asked"
    assert "NOT asked" in panel["note"][0]["text"]
    total = find_entry(entries, "55758-7")["resource"]
    assert total["valueQuantity"]["value"] == 1
    assert {c["code"] for c in total["interpretation"][0]["coding"]} == {"negative", "NEG"}
    assert safety_resources(qr, result, "Observation/x", "Organization/o1") == []
    # GAD-2 is not a depression screen: no self-harm statement
    qr2, res2 = scored("gad-2", [3, 1])
    gad_panel = extract_observations(qr2, res2, id_factory=counter())[0]["resource"]
    assert "component" not in gad_panel and gad_panel["code"]["coding"][0]["code"] == "gad-2"


def test_device_author_is_not_a_performer_and_source_is_used():
    qr, result = scored("gad-2", [1, 1], author={"reference": "Device/app"},
                        source={"reference": "Patient/p1"})
    obs = extract_observations(qr, result, id_factory=counter())[0]["resource"]
    assert obs["performer"] == [{"reference": "Patient/p1"}]


def test_cannot_extract_invalid_or_unscored():
    qr = qr_for("phq-9", [1] * 9)
    qr["item"][0]["answer"][0]["valueCoding"]["code"] = "LA0000-0"
    bad = score_response(q("phq-9"), qr)
    with pytest.raises(FhirError) as info:
        extract_bundle(qr, bad)
    assert info.value.status == 422 and info.value.issues[0].code == "code-invalid"
    with pytest.raises(ValueError):
        extract_observations(qr, bad)
    unknown = score_response(None, qr)
    with pytest.raises(FhirError):
        extract_bundle(qr, unknown)


# --------------------------------------------------------------------------- safety


@pytest.mark.parametrize("item9", [0, 1, 2, 3])
@pytest.mark.parametrize("others", [0, 1, 3])
def test_item9_flag_for_every_nonzero_answer_and_never_zero(item9, others, schema_validator):
    qr, result = scored("phq-9", [others] * 8 + [item9])
    assert result.safety_flag is (item9 > 0)
    entries = extract_observations(qr, result, id_factory=counter())
    ref = item9_reference(entries)
    out = safety_resources(qr, result, ref, "Organization/requester", id_factory=counter())
    if item9 == 0:
        assert out == []
        return
    flag, task = (e["resource"] for e in out)
    for resource in (flag, task):
        check_valid(resource, schema_validator)
    assert flag["status"] == "active" and flag["subject"] == {"reference": "Patient/p1"}
    assert flag["category"][0]["coding"][0]["code"] == "safety"
    assert {"url": "http://hl7.org/fhir/StructureDefinition/flag-detail",
            "valueReference": {"reference": ref}} in flag["extension"]
    assert task["focus"] == {"reference": out[0]["fullUrl"]}
    assert task["reasonReference"] == {"reference": ref}
    assert task["owner"] == {"reference": "Organization/requester"}
    assert task["priority"] == {1: "urgent", 2: "asap", 3: "stat"}[item9]
    assert task["code"]["coding"][0]["code"] == "225337009"
    assert task["restriction"]["period"]["end"] == "2026-11-21T10:00:00Z"
    assert "988" in task["note"][0]["text"]
    assert active_safety_flags([flag]) == [flag]


def test_item9_flag_over_all_item9_values_with_many_totals():
    """Item 9 alone decides the flag, whatever the other eight answers (every 257th of 4^8)."""
    questionnaire = q("phq-9")
    for n, rest in enumerate(itertools.product(range(4), repeat=8)):
        if n % 257:
            continue
        for item9 in range(4):
            result = score_response(questionnaire, qr_for("phq-9", [*rest, item9]))
            assert result.safety_flag is (item9 > 0)
            assert result.total == sum(rest) + item9


# --------------------------------------------------------------------------- amendment


def _stored(entries: list[dict]) -> list[dict]:
    """Simulate the server storing a transaction: ids assigned, urn:uuid refs resolved."""
    ids = {e["fullUrl"]: f"obs{n}" for n, e in enumerate(entries)}
    text = json.dumps([e["resource"] for e in entries])
    for url, rid in ids.items():
        text = text.replace(url, f"Observation/{rid}")
    out = json.loads(text)
    for resource, rid in zip(out, ids.values(), strict=True):
        resource["id"] = rid
    return out


def test_amended_response_supersedes_instead_of_duplicating(schema_validator):
    qr, result = scored("phq-9", [1] * 9)
    stored = _stored(extract_observations(qr, result, id_factory=counter()))
    amended, result2 = scored("phq-9", [1, 1, 3, 1, 1, 1, 1, 1, 0], status="amended")
    new = extract_observations(amended, result2, id_factory=counter())
    changes = supersede(stored, new)
    assert all(c["request"]["method"] == "PUT" for c in changes)  # nothing created twice
    by_code = {c["resource"]["code"]["coding"][0]["code"]: c["resource"] for c in changes}
    assert set(by_code) == {"44259-0", "44260-8", "44261-6"}  # only what changed
    for resource in by_code.values():
        assert resource["status"] == "amended"
        check_valid(resource, schema_validator)
    old_ids = {o["code"]["coding"][0]["code"]: o["id"] for o in stored}
    assert {c["request"]["url"] for c in changes} == {
        f"Observation/{old_ids[k]}" for k in by_code}
    assert by_code["44261-6"]["valueQuantity"]["value"] == 10
    assert by_code["44260-8"]["valueCodeableConcept"]["coding"][0]["code"] == "LA6568-5"


def test_amended_to_incomplete_retracts_the_total():
    qr, result = scored("gad-7", [2] * 7)
    stored = _stored(extract_observations(qr, result, id_factory=counter()))
    amended, result2 = scored("gad-7", [2, 2, 2, 2, 2, 2, None], status="amended")
    changes = supersede(stored, extract_observations(amended, result2, id_factory=counter()))
    statuses = {c["resource"]["code"]["coding"][0]["code"]: c["resource"]["status"]
                for c in changes}
    assert statuses["70274-6"] == "entered-in-error"
    assert statuses["69736-7"] == "entered-in-error"
    assert statuses["69737-5"] == "amended"  # the panel: members and note changed
    panel = next(c["resource"] for c in changes if c["resource"]["code"]["coding"][0][
        "code"] == "69737-5")
    assert all(m["reference"].startswith("Observation/obs") for m in panel["hasMember"])


def test_supersede_without_new_entries_retracts_everything():
    qr, result = scored("phq-2", [1, 1])
    stored = _stored(extract_observations(qr, result, id_factory=counter()))
    stored[0]["status"] = "entered-in-error"
    changes = supersede(stored)
    assert len(changes) == len(stored) - 1
    assert {c["resource"]["status"] for c in changes} == {"entered-in-error"}


# --------------------------------------------------------------------------- recommend care


def _param(params: dict, name: str) -> list:
    return [p for p in params["parameter"] if p["name"] == name]


@pytest.mark.parametrize(("cases", "step", "priority", "services"), [
    ([("phq-9", [3, 3, 3, 3, 3, 3, 2, 0, 0], None)], "specialist", "urgent",
     {"183524004", "390866009"}),
    ([("phq-9", [2, 2, 2, 2, 2, 2, 2, 1, 0], None)], "high-intensity", "routine",
     {"306226009", "390866009"}),
    ([("phq-9", [2, 2, 2, 2, 2, 2, 2, 1, 0], "LA6574-3")], "high-intensity", "urgent",
     {"306226009", "390866009"}),
    ([("phq-9", [2, 2, 2, 2, 2, 0, 0, 0, 0], None)], "therapy", "routine",
     {"306226009", "306252003"}),
    ([("gad-7", [3, 3, 3, 3, 3, 0, 0], None)], "specialist", "urgent", {"183524004", "390866009"}),
    ([("gad-7", [1, 1, 1, 1, 1, 0, 0], None), ("phq-9", [0] * 9, None)], "low-intensity",
     "routine", {"461481000124109"}),
    ([("phq-9", [1, 1, 0, 0, 0, 0, 0, 0, 0], None), ("gad-7", [0] * 7, None)], "none", None,
     set()),
    ([("phq-2", [2, 1], None)], "full-screen", "routine", set()),
    ([("phq-9", [0, 0, 0, 0, 0, 0, 0, 0, 3], None)], "safety", "stat", {"183524004", "390866009"}),
    ([("phq-9", [3] * 8 + [1], None)], "safety", "urgent", {"183524004", "390866009"}),
    ([("phq-9", [1] * 8 + [2], None)], "safety", "asap", {"183524004", "390866009"}),
])
def test_recommend_care_table(cases, step, priority, services):
    results = []
    for key, scores, difficulty in cases:
        results.append(scored(key, scores, difficulty=difficulty)[1])
    params = recommend_care(results, safety_flag_active=False)
    Parameters.model_validate(params)
    level = _param(params, "level-of-care")[0]["valueCodeableConcept"]["coding"][0]["code"]
    assert level == step
    got_priority = [p["valueCode"] for p in _param(params, "priority")]
    assert got_priority == ([priority] if priority else [])
    assert {p["valueCodeableConcept"]["coding"][0]["code"]
            for p in _param(params, "service-category")} == services
    assert _param(params, "requires-clinical-sign-off")[0]["valueBoolean"] is True
    table = _param(params, "table")[0]["part"]
    assert len(table) == len(CARE_TABLE)
    assert len(_param(params, "score")) == len(results)


def test_recommend_care_with_active_flag_and_only_a_phq2():
    result = scored("phq-2", [0, 0])[1]
    params = recommend_care([result], safety_flag_active=True)
    assert _param(params, "level-of-care")[0]["valueCodeableConcept"]["coding"][0][
        "code"] == "safety"
    assert _param(params, "priority")[0]["valueCode"] == "urgent"
    assert _param(params, "self-harm-assessed")[0]["valueBoolean"] is False
    assert "988" in _param(params, "crisis-resources")[0]["valueString"]


def test_recommend_care_ignores_incomplete_results():
    result = scored("phq-9", [3, 3, 3, 3, 3, 3, 3, None, 0])[1]
    params = recommend_care([result], safety_flag_active=False)
    assert _param(params, "level-of-care")[0]["valueCodeableConcept"]["coding"][0][
        "code"] == "insufficient"
    assert _param(params, "priority") == []
    assert any("not used" in p["valueString"] for p in _param(params, "rationale"))


# --------------------------------------------------------------------------- priority floor


def _flag(item9: int, status: str = "active") -> dict:
    qr, result = scored("phq-9", [0] * 8 + [item9])
    flag = safety_resources(qr, result, "Observation/o9", None, id_factory=counter())[0][
        "resource"]
    flag["status"] = status
    return flag


def test_referral_priority_floor():
    none = referral_priority_floor("routine", flags=[])
    assert (none.priority, none.raised, none.routine_clock_allowed) == ("routine", False, True)
    low = referral_priority_floor("routine", flags=[_flag(1)])
    assert (low.priority, low.floor, low.raised, low.routine_clock_allowed) == (
        "urgent", "urgent", True, False)
    assert referral_priority_floor("asap", flags=[_flag(2)]).priority == "asap"
    assert referral_priority_floor(None, flags=[_flag(1), _flag(3)]).priority == "stat"
    assert referral_priority_floor("routine", flags=[_flag(3, "inactive")]).priority == "routine"
    over = referral_priority_floor("routine", flags=[_flag(3)], override_reason="Assessed: low")
    assert (over.priority, over.overridden, over.routine_clock_allowed) == (
        "routine", True, False)
    assert "Assessed: low" in over.reason
    assert referral_priority_floor("routine", flags=[_flag(3)], override_reason="  ").priority \
        == "stat"
    with pytest.raises(ValueError):
        referral_priority_floor("soon", flags=[])


def test_foreign_flags_are_ignored():
    other = copy.deepcopy(_flag(3))
    other["code"] = {"text": "Fall risk"}
    assert active_safety_flags([other]) == []
    assert referral_priority_floor("routine", flags=[other]).priority == "routine"


def test_amended_item9_updates_or_retracts_the_flag():
    flag = {**_flag(3), "id": "f1"}
    _qr, still = scored("phq-9", [0] * 8 + [1], status="amended")
    [changed] = supersede_safety_flags([flag], still)
    assert changed["request"] == {"method": "PUT", "url": "Flag/f1"}
    assert changed["resource"]["status"] == "active"
    assert referral_priority_floor("routine", flags=[changed["resource"]]).priority == "urgent"
    _qr, cleared = scored("phq-9", [0] * 9, status="amended")
    [retracted] = supersede_safety_flags([flag], cleared)
    assert retracted["resource"]["status"] == "entered-in-error"
    _qr, same = scored("phq-9", [1] * 8 + [3], status="amended")
    assert supersede_safety_flags([flag], same) == []
    assert supersede_safety_flags([{**flag, "status": "inactive"}], cleared) == []


def test_missing_subject_is_reported():
    qr = qr_for("gad-2", [1, 1])
    del qr["subject"]
    result = score_response(q("gad-2"), qr)
    assert result.total == 2
    assert any(i.expression == ["QuestionnaireResponse.subject"] for i in result.issues)


def test_priority_decisions_in_full():
    from mappers.care_recommendation import PriorityDecision
    assert referral_priority_floor("routine", flags=[_flag(1)]) == PriorityDecision(
        "urgent", "urgent", True, False, False,
        "Active safety flag (PHQ-9 item 9 = 1): priority at least 'urgent', raised from "
        "'routine'")
    assert referral_priority_floor("stat", flags=[_flag(3)]) == PriorityDecision(
        "stat", "stat", False, False, False,
        "Active safety flag (PHQ-9 item 9 = 3): priority at least 'stat'")
    assert referral_priority_floor("routine", flags=[_flag(2)], override_reason=" seen ") == (
        PriorityDecision("routine", "urgent", False, True, False,
                         "Clinician override of the safety floor 'urgent': seen"))
    assert referral_priority_floor(None, flags=[]) == PriorityDecision(
        "routine", None, False, False, True, "No active safety flag")


def test_flag_without_a_score_counts_as_item9_one():
    from mappers.screening_extract import ITEM9_SCORE_URL
    flag = _flag(3)
    flag["extension"] = [e for e in flag["extension"] if e["url"] != ITEM9_SCORE_URL]
    decision = referral_priority_floor("routine", flags=[flag])
    assert (decision.floor, decision.reason) == ("urgent", (
        "Active safety flag (PHQ-9 item 9 = 1): priority at least 'urgent', raised from "
        "'routine'"))


def test_item9_score_is_read_from_its_own_extension_only():
    from mappers.screening_extract import ITEM9_SCORE_URL
    flag = _flag(1)
    flag["extension"].insert(0, {"url": "http://example.org/other", "valueInteger": 3})
    assert referral_priority_floor("routine", flags=[flag]).floor == "urgent"
    flag["extension"] = [e for e in flag["extension"] if e["url"] != ITEM9_SCORE_URL]
    flag["extension"].append({"url": ITEM9_SCORE_URL, "valueString": "3"})
    assert referral_priority_floor("routine", flags=[flag]).floor == "urgent"  # unknown: 1


def test_item9_reference_forms():
    obs = {"resourceType": "Observation", "code": {"coding": [{"code": "44260-8"}]}}
    assert item9_reference([{"fullUrl": "urn:uuid:9", "resource": obs}]) == "urn:uuid:9"
    assert item9_reference([{"fullUrl": "urn:uuid:9", "resource": {**obs, "id": "o9"}}]) == (
        "urn:uuid:9")
    stored = {"fullUrl": "http://x/fhir/Observation/o9", "resource": {**obs, "id": "o9"}}
    assert item9_reference([stored]) == "Observation/o9"
    assert item9_reference([{"fullUrl": "http://x/fhir/Observation/o9",
                             "resource": obs}]) == "http://x/fhir/Observation/o9"
    assert item9_reference([{"resource": {**obs, "code": {"coding": [{"code": "1-8"}]}}}]) is None


def test_safety_resources_in_detail():
    from mappers.screening_extract import FLAG_DETAIL_URL, FLAG_PRIORITY_URL, ITEM9_SCORE_URL
    qr, result = scored("phq-9", [0] * 8 + [2], authored="2026-11-20T10:00:00.250Z",
                        author={"reference": "PractitionerRole/r1"})
    flag_entry, task_entry = safety_resources(qr, result, "Observation/o9",
                                              "Organization/clinic", id_factory=counter())
    flag, task = flag_entry["resource"], task_entry["resource"]
    assert flag_entry["fullUrl"] == "urn:uuid:00000000-0000-4000-8000-000000000001"
    assert flag["extension"] == [
        {"url": FLAG_DETAIL_URL, "valueReference": {"reference": "Observation/o9"}},
        {"url": FLAG_PRIORITY_URL, "valueCodeableConcept": {"coding": [{
            "system": "http://hl7.org/fhir/flag-priority-code", "code": "PH",
            "display": "High priority"}]}},
        {"url": ITEM9_SCORE_URL, "valueInteger": 2}]
    assert flag["period"] == {"start": "2026-11-20T10:00:00.250Z"}
    assert flag["author"] == {"reference": "PractitionerRole/r1"}
    assert flag["code"]["text"].startswith("PHQ-9 item 9 positive (More than half the days)")
    assert (flag["subject"], flag["encounter"]) == (qr["subject"], qr["encounter"])
    assert task["restriction"] == {"period": {"end": "2026-11-21T10:00:00.250Z"}}
    assert task["focus"] == {"reference": flag_entry["fullUrl"]}
    assert task["reasonReference"] == {"reference": "Observation/o9"}
    assert task["owner"] == {"reference": "Organization/clinic"}
    assert task["requester"] == {"reference": "PractitionerRole/r1"}
    assert (task["for"], task["encounter"]) == (qr["subject"], qr["encounter"])
    plain, _ = scored("phq-9", [0] * 8 + [1], authored="2026-11-20",
                      author={"reference": "RelatedPerson/rp1"})
    flag2, task2 = (e["resource"] for e in safety_resources(
        plain, score_response(q("phq-9"), plain), "Observation/o9", None,
        id_factory=counter(), now="2026-11-20T08:00:00+02:00"))
    assert "author" not in flag2 and "owner" not in task2  # Flag.author takes no RelatedPerson
    assert task2["requester"] == {"reference": "RelatedPerson/rp1"}
    assert flag2["period"] == {"start": "2026-11-20"}
    assert task2["authoredOn"] == "2026-11-20T08:00:00+02:00"
    assert task2["restriction"] == {"period": {"end": "2026-11-21T08:00:00+02:00"}}
    undated = qr_for("phq-9", [0] * 8 + [1])
    del undated["authored"]
    flag3, task3 = (e["resource"] for e in safety_resources(
        undated, score_response(q("phq-9"), undated), "Observation/o9", None,
        id_factory=counter()))
    assert "period" not in flag3 and "authoredOn" not in task3 and "restriction" not in task3
    assert "score 1" not in flag3["code"]["text"]  # the answer's display is used


def test_safety_resources_without_display_use_the_score():
    qr, result = scored("phq-9", [0] * 8 + [3])
    for ans in result.answers:
        ans.value = {k: v for k, v in ans.value.items() if k != "display"}
    flag = safety_resources(qr, result, "Observation/o9", None, id_factory=counter())[0]
    assert flag["resource"]["code"]["text"].startswith("PHQ-9 item 9 positive (score 3)")
