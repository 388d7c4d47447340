"""Screening through the REST API: scoring on write, Observations in the same transaction,
the item-9 safety Flag and Task, amendments, $extract, $recommend-care, priority floor."""

from __future__ import annotations

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
    assert "10" in " ".join(i["diagnostics"] for i in resp.json()["issue"])
    qr_id = resp.headers["Location"].split("/")[-3]
    observations = _observations(server, qr_id)
    total = _total(observations, "44261-6")
    assert score(total) == 10
    panel = _total(observations, "44249-1")
    assert len(panel["hasMember"]) >= 9
    flags = server.get("Flag", params={"patient": patient}).json()
    assert flags.get("entry", []) == []


def test_item9_positive_creates_flag_and_risk_task_and_raises_priority(server):
    patient = _patient(server)
    resp = server.post("QuestionnaireResponse",
                       qr_for("phq-9", [3, 3, 2, 2, 1, 1, 1, 1, 3], patient))
    assert resp.status_code == 201, resp.text
    flags = server.get("Flag", params={"patient": patient}).json()["entry"]
    assert len(flags) == 1 and flags[0]["resource"]["status"] == "active"
    tasks = server.get("Task", params={"patient": patient, "priority": "stat"}).json()
    assert tasks.get("entry"), "a same-day risk assessment Task is created"
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
