"""Screening through the REST API: scoring on write, Observations in the same transaction,
the item-9 safety Flag and Task, amendments, $extract, $recommend-care, priority floor."""

from __future__ import annotations

import copy

import pytest

from profiles.questionnaires import get_questionnaire
from tests.samples import sample
from tests.snapshot import db_snapshot

LOINC = "http://loinc.org"
BASE = "http://mh-referral.example.org/fhir/Questionnaire"


def qr_for(key: str, scores: list[int | None], patient: str, status: str = "completed",
           author: str | None = None) -> dict:
    questionnaire = get_questionnaire(f"{BASE}/{key}|1.0.0")
    scored_items = [i for i in questionnaire["item"] if i.get("required")]
    items = []
    for item, score in zip(scored_items, scores, strict=True):
        if score is not None:
            items.append({"linkId": item["linkId"], "answer": [
                {"valueCoding": dict(item["answerOption"][score]["valueCoding"])}]})
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": f"{BASE}/{key}|1.0.0",
          "status": status, "subject": {"reference": patient},
          "authored": "2026-11-20T10:00:00Z", "item": items}
    if author:
        qr["author"] = {"reference": author}
    return qr


def _patient(server) -> str:
    return "Patient/" + server.post("Patient", sample("Patient")).json()["id"]


def _observations(server, qr_id: str) -> list[dict]:
    bundle = server.get("Observation", params={"derived-from": f"QuestionnaireResponse/{qr_id}",
                                               "_count": 100}).json()
    return [e["resource"] for e in bundle.get("entry", [])]


def score(observation: dict) -> int:
    if "valueInteger" in observation:
        return observation["valueInteger"]
    return observation["valueQuantity"]["value"]


def _total(observations: list[dict], code: str) -> dict:
    return next(o for o in observations if o["code"]["coding"][0]["code"] == code)


def test_phq9_scored_into_observations_without_flag(server):
    patient = _patient(server)
    resp = server.post("QuestionnaireResponse", qr_for("phq-9", [2, 2, 1, 1, 1, 1, 1, 1, 0],
                                                       patient),
                       headers={"Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201, resp.text
    summary = resp.json()["issue"][-1]
    assert (summary["severity"], summary["code"]) == ("information", "informational")
    assert summary["diagnostics"].startswith("Patient Health Questionnaire-9 (PHQ-9) total 10/27")
    assert "safety flag" not in summary["diagnostics"]
    qr_id = resp.headers["Location"].split("/")[-3]
    observations = _observations(server, qr_id)
    total = _total(observations, "44261-6")
    assert score(total) == 10
    panel = _total(observations, "44249-1")
    members = {m["reference"] for m in panel["hasMember"]}
    assert members == {f"Observation/{o['id']}" for o in observations if o is not panel}
    assert len(observations) == 11  # panel, nine items, total
    item9 = _total(observations, "44260-8")
    assert item9["valueCodeableConcept"]["coding"][0]["code"] == "LA6568-5"
    flags = server.get("Flag", params={"patient": patient}).json()
    assert flags.get("entry", []) == []
    assert server.get("Task", params={"patient": patient}).json().get("entry", []) == []


def test_item9_positive_creates_flag_and_risk_task_and_raises_priority(server, sample_world):
    patient = _patient(server)
    resp = server.post("QuestionnaireResponse",
                       qr_for("phq-9", [3, 3, 2, 2, 1, 1, 1, 1, 3], patient))
    assert resp.status_code == 201, resp.text
    flags = server.get("Flag", params={"patient": patient}).json()["entry"]
    assert len(flags) == 1 and flags[0]["resource"]["status"] == "active"
    flag = flags[0]["resource"]
    assert flag["subject"] == {"reference": patient}
    assert flag["code"]["coding"][0]["code"] == "6471006"
    task = _risk_task(server, patient)
    assert task["priority"] == "stat"  # item 9 = 3
    assert task["focus"] == {"reference": f"Flag/{flag['id']}"}
    sr = sample("ServiceRequest", subject={"reference": patient}, priority="routine")
    created = server.post("ServiceRequest", sr).json()
    assert created["priority"] == "stat"
    # the referral Task too: the stalled-referral clock reads the Task's priority
    task = sample("Task", focus={"reference": f"ServiceRequest/{created['id']}"},
                  priority="routine")
    task["code"]["coding"][0]["code"] = "fulfill"
    task["for"] = {"reference": patient}
    stored = server.post("Task", task)
    assert stored.status_code == 201, stored.text
    assert stored.json()["priority"] == "stat"
    override = dict(task, extension=[{
        "url": "http://mh-referral.example.org/fhir/StructureDefinition/"
               "safety-priority-override-reason", "valueString": "Assessed today: low risk"}])
    assert server.post("Task", override).json()["priority"] == "routine"
    override_sr = sample("ServiceRequest", subject={"reference": patient}, priority="routine",
                         extension=[{"url": "http://mh-referral.example.org/fhir/"
                                     "StructureDefinition/safety-priority-override-reason",
                                     "valueString": "assessed today, safe"}])
    assert server.post("ServiceRequest", override_sr).json()["priority"] == "routine"
    other = _patient(server)
    unflagged = sample("ServiceRequest", subject={"reference": other}, priority="routine")
    assert server.post("ServiceRequest", unflagged).json()["priority"] == "routine"


def _risk_task(server, patient: str) -> dict:
    """The one risk-assessment Task of the patient, checked field by field."""
    tasks = [e["resource"] for e in server.get("Task", params={"patient": patient}).json()
             .get("entry", [])]
    assert len(tasks) == 1, tasks
    task = tasks[0]
    assert task["code"]["coding"] == [{"system": "http://snomed.info/sct", "code": "225337009",
                                       "display": "Suicide risk assessment (procedure)"}]
    assert task["for"] == {"reference": patient}
    assert (task["status"], task["intent"]) == ("requested", "order")
    assert task["authoredOn"] == "2026-11-20T10:00:00Z"
    assert task["restriction"]["period"]["end"] == "2026-11-21T10:00:00Z"
    return task


@pytest.mark.parametrize("item9, priority", [(1, "urgent"), (2, "asap")])
def test_risk_task_priority_follows_item9(server, item9, priority):
    patient = _patient(server)
    resp = server.post("QuestionnaireResponse",
                       qr_for("phq-9", [0, 0, 0, 0, 0, 0, 0, 0, item9], patient))
    assert resp.status_code == 201, resp.text
    assert _risk_task(server, patient)["priority"] == priority
    sr = sample("ServiceRequest", subject={"reference": patient}, priority="routine")
    assert server.post("ServiceRequest", sr).json()["priority"] == "urgent"


def _grouped(structure: str) -> tuple[dict, list[dict]]:
    """The shipped PHQ-9 regrouped as `structure`, and a function placing answer items."""
    q = copy.deepcopy(get_questionnaire(f"{BASE}/phq-9|1.0.0"))
    q.pop("id", None)
    q["url"] = f"http://example.org/Questionnaire/phq-9-{structure}"
    items = q["item"]
    if structure == "group":
        q["item"] = [{"linkId": "g", "type": "group", "text": "Over the last 2 weeks",
                      "item": items}]
    elif structure == "two-groups":
        q["item"] = [{"linkId": "g1", "type": "group", "item": items[:4]},
                     {"linkId": "g2", "type": "group",
                      "item": [{"linkId": "g3", "type": "group", "item": items[4:]}]}]
    elif structure == "child-of-answer":
        q["item"] = items[:7] + [dict(items[7], item=[items[8]])] + items[9:]
    return q, items


def _place(structure: str, answers: list[dict]) -> list[dict]:
    if structure == "group":
        return [{"linkId": "g", "item": answers}]
    if structure == "two-groups":
        return [{"linkId": "g1", "item": answers[:4]},
                {"linkId": "g2", "item": [{"linkId": "g3", "item": answers[4:]}]}]
    item8 = copy.deepcopy(answers[7])
    item8["answer"][0]["item"] = [answers[8]]
    return answers[:7] + [item8]


@pytest.mark.parametrize("structure", ["group", "two-groups", "child-of-answer"])
@pytest.mark.parametrize("complete", [True, False])
def test_safety_rule_holds_for_nested_questionnaires(server, structure, complete):
    q, items = _grouped(structure)
    assert server.post("Questionnaire", q).status_code == 201
    patient = _patient(server)
    scores = [0, 0, 0, 0, 0, 0, 0, 0, 2] if complete else [1, None, 0, 0, 0, 0, 0, 0, 2]
    answers = [{"linkId": item["linkId"], "answer": [
        {"valueCoding": dict(item["answerOption"][score]["valueCoding"])}]}
        for item, score in zip(items[:9], scores, strict=True) if score is not None]
    if not complete:
        answers.insert(1, {"linkId": items[1]["linkId"]})
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": q["url"],
          "status": "completed", "subject": {"reference": patient},
          "authored": "2026-11-20T10:00:00Z", "item": _place(structure, answers)}
    resp = server.post("QuestionnaireResponse", qr, headers={"Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201, resp.text
    summary = resp.json()["issue"][-1]["diagnostics"]
    if complete:
        assert summary.endswith("item 9 (self-harm) answered 2: safety flag raised")
    else:
        assert "incomplete, no total (unanswered: 44255-8)" in summary
    flags = server.get("Flag", params={"patient": patient}).json()["entry"]
    assert [f["resource"]["status"] for f in flags] == ["active"]
    assert _risk_task(server, patient)["priority"] == "asap"


@pytest.mark.parametrize("breakage, fragment", [
    ("drop-option", "does not offer every score 0-3"),
    ("unscored-option", "which has no defined score"),
    ("foreign-option", "is not a LOINC answer code"),
    ("wrong-weight", "the instrument defines 3"),
    ("not-choice", "must be a choice item with answer options"),
    ("no-item-9", "looks like a PHQ-8"),
    ("duplicate-item", "has 2 items coded 44250-9"),
])
def test_questionnaire_that_is_not_the_instrument_is_refused(server, breakage, fragment):
    q = copy.deepcopy(get_questionnaire(f"{BASE}/phq-9|1.0.0"))
    q.pop("id", None)
    q["url"] = f"http://example.org/Questionnaire/phq-9-{breakage}"
    first = q["item"][0]
    if breakage == "drop-option":
        first["answerOption"] = first["answerOption"][:3]
    elif breakage == "unscored-option":
        first["answerOption"].append({"valueCoding": {"system": LOINC, "code": "LA6572-7"}})
    elif breakage == "foreign-option":
        first["answerOption"].append({"valueCoding": {"system": "http://x", "code": "0"}})
    elif breakage == "wrong-weight":
        first["answerOption"][3]["extension"][0]["valueDecimal"] = 2
    elif breakage == "not-choice":
        q["item"][0] = {k: v for k, v in first.items() if k != "answerOption"}
        q["item"][0]["type"] = "integer"
    elif breakage == "no-item-9":
        del q["item"][8]
    elif breakage == "duplicate-item":
        q["item"].append(dict(copy.deepcopy(first), linkId="again"))
    assert server.post("Questionnaire", q).status_code == 201
    patient = _patient(server)
    qr = {"resourceType": "QuestionnaireResponse", "questionnaire": q["url"],
          "status": "completed", "subject": {"reference": patient}}
    resp = server.post("QuestionnaireResponse", qr)
    assert resp.status_code == 422, resp.text
    issues = resp.json()["issue"]
    assert [(i["code"], i["expression"]) for i in issues if i["severity"] == "error"][0] == (
        "business-rule", ["Questionnaire.item"])
    assert any(fragment in i["diagnostics"] for i in issues)


def test_amended_response_supersedes_observations(server):
    patient = _patient(server)
    first = server.post("QuestionnaireResponse",
                        qr_for("phq-9", [1, 1, 1, 1, 1, 1, 1, 1, 0], patient))
    qr = first.json()
    before = _total(_observations(server, qr["id"]), "44261-6")
    assert score(before) == 8
    amended = qr_for("phq-9", [2, 2, 2, 1, 1, 1, 1, 1, 0], patient, status="amended")
    amended["id"] = qr["id"]
    resp = server.put(f"QuestionnaireResponse/{qr['id']}", amended)
    assert resp.status_code == 200, resp.text
    observations = _observations(server, qr["id"])
    totals = [o for o in observations if o["code"]["coding"][0]["code"] == "44261-6"]
    live = [o for o in totals if o["status"] in ("final", "amended")]
    assert len(live) == 1 and score(live[0]) == 11


def test_invalid_answers_are_rejected_and_nothing_stored(server):
    patient = _patient(server)
    bad = qr_for("phq-9", [1, 1, 1, 1, 1, 1, 1, 1, 0], patient)
    bad["item"][0]["answer"][0]["valueCoding"]["code"] = "LA9999-9"
    before = db_snapshot(server.database)
    resp = server.post("QuestionnaireResponse", bad)
    assert resp.status_code == 422
    assert resp.json()["issue"][0]["expression"][0].startswith("QuestionnaireResponse.item[0]")
    assert db_snapshot(server.database) == before


def test_unknown_questionnaire_is_stored_not_scored(server):
    patient = _patient(server)
    qr = {"resourceType": "QuestionnaireResponse", "status": "completed",
          "questionnaire": "http://example.org/Questionnaire/unknown",
          "subject": {"reference": patient},
          "item": [{"linkId": "1", "answer": [{"valueInteger": 3}]}]}
    resp = server.post("QuestionnaireResponse", qr, headers={"Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    assert "not scored" in " ".join(i["diagnostics"] for i in resp.json()["issue"])
    assert _observations(server, resp.headers["Location"].split("/")[-3]) == []


def test_extract_and_recommend_care(server):
    patient = _patient(server)
    qr = qr_for("gad-7", [2, 2, 2, 2, 2, 1, 1], patient)
    extracted = server.post("QuestionnaireResponse/$extract", qr)
    assert extracted.status_code == 200, extracted.text
    bundle = extracted.json()
    assert bundle["type"] == "transaction"
    assert any(e["resource"]["code"]["coding"][0]["code"] == "70274-6"
               and score(e["resource"]) == 12 for e in bundle["entry"])
    server.post("QuestionnaireResponse", qr)
    server.post("QuestionnaireResponse", qr_for("phq-9", [3, 3, 3, 2, 2, 2, 2, 2, 0], patient))
    rec = server.get(f"{patient}/$recommend-care")
    assert rec.status_code == 200, rec.text
    names = [p["name"] for p in rec.json()["parameter"]]
    assert "requires-clinical-sign-off" in names


def test_risk_task_owner_is_the_authors_organization(server):
    org = server.post("Organization", sample("Organization")).json()["id"]
    role = sample("PractitionerRole", organization={"reference": f"Organization/{org}"})
    role_id = server.post("PractitionerRole", role).json()["id"]
    for author, owner in ((f"PractitionerRole/{role_id}", f"Organization/{org}"),
                          (f"Organization/{org}", f"Organization/{org}")):
        patient = _patient(server)
        qr = qr_for("phq-9", [0] * 8 + [1], patient, author=author)
        assert server.post("QuestionnaireResponse", qr).status_code == 201
        task = _risk_task(server, patient)
        assert task["owner"] == {"reference": owner}
    loose = server.post("PractitionerRole", sample("PractitionerRole")).json()["id"]
    patient = _patient(server)
    qr = qr_for("phq-9", [0] * 8 + [1], patient, author=f"PractitionerRole/{loose}")
    assert server.post("QuestionnaireResponse", qr).status_code == 201
    assert "owner" not in _risk_task(server, patient)


def test_priority_floor_is_reported_on_the_service_request(server):
    patient = _patient(server)
    server.post("QuestionnaireResponse", qr_for("phq-9", [0] * 8 + [1], patient))
    sr = sample("ServiceRequest", subject={"reference": patient}, priority="routine")
    resp = server.post("ServiceRequest", sr, headers={"Prefer": "return=OperationOutcome"})
    assert resp.status_code == 201
    issue = next(i for i in resp.json()["issue"] if i.get("expression") == [
        "ServiceRequest.priority"])
    assert (issue["severity"], issue["code"]) == ("information", "informational")
    assert issue["diagnostics"] == ("Active safety flag (PHQ-9 item 9 = 1): priority at least "
                                    "'urgent', raised from 'routine'")


def test_deleted_or_resolved_flag_is_raised_again_by_a_new_positive_response(server):
    patient = _patient(server)
    first = server.post("QuestionnaireResponse", qr_for("phq-9", [0] * 8 + [2], patient)).json()
    flag = server.get("Flag", params={"patient": patient}).json()["entry"][0]["resource"]
    assert server.delete(f"Flag/{flag['id']}").status_code == 200
    server.post("QuestionnaireResponse", qr_for("phq-9", [0] * 8 + [2], patient))
    flags = server.get("Flag", params={"patient": patient}).json()["entry"]
    assert [f["resource"]["status"] for f in flags] == ["active"]
    # Resolved by a clinician, then the first response is amended (item 9 unchanged): the
    # flag is raised again and points at the item-9 Observation already stored.
    again = flags[0]["resource"]
    assert server.put(f"Flag/{again['id']}", dict(again, status="inactive")).status_code == 200
    amended = qr_for("phq-9", [1] + [0] * 7 + [2], patient, status="amended")
    amended["id"] = first["id"]
    assert server.put(f"QuestionnaireResponse/{first['id']}", amended).status_code == 200
    item9 = _total(_observations(server, first["id"]), "44260-8")
    active = [f["resource"] for f in server.get("Flag", params={"patient": patient}).json()[
        "entry"] if f["resource"]["status"] == "active"]
    assert len(active) == 1
    detail = active[0]["extension"][0]["valueReference"]
    assert detail == {"reference": f"Observation/{item9['id']}"}


def test_amending_item9_to_zero_retracts_the_flag(server):
    patient = _patient(server)
    first = server.post("QuestionnaireResponse", qr_for("phq-9", [0] * 8 + [2], patient)).json()
    amended = qr_for("phq-9", [0] * 9, patient, status="amended")
    amended["id"] = first["id"]
    assert server.put(f"QuestionnaireResponse/{first['id']}", amended).status_code == 200
    flags = server.get("Flag", params={"patient": patient}).json()["entry"]
    assert [f["resource"]["status"] for f in flags] == ["entered-in-error"]
