"""The outcome measures of a fixed synthetic population (examples/synthetic_population.py,
seed 17, 60 referrals), computed here by hand from the population's plan and compared with
what `$referral-metrics` and `$evaluate-measure` answer over HTTP, with authorization on.

The oracle below restates the definitions in a few lines each (funnel, medians, equity cells
with suppression, response and remission); it shares no code with the server's metrics.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import pytest

from fhir_server.auth.tokens import issue_token
from tests.live import FhirHttp
from tests.outcomes_support import csv_rows, groups, synthetic_population
from tests.web_support import start_web_server

syn = synthetic_population()

POP = syn.build(seed=17, referrals=60, start=date(2026, 6, 1))
START, END = "2026-05-01", "2026-12-31"
WINDOW = {"start": START, "end": END}
N = 11  # the default small-cell threshold


# -- the oracle ------------------------------------------------------------------------------
def hours(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 3600


def nearest_rank(values: list[float], pct: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(pct / 100 * len(ordered)) - 1]


def step_at(task, status: str) -> datetime | None:
    return next((s.at for s in task.steps if s.status == status), None)


def tasks() -> list[dict]:
    """Every referral Task of the plan as the facts the measures count."""
    out = []
    for referral in POP.referrals:
        patient = POP.patients[referral.patient]
        redirector = f"Organization/{syn.PROVIDERS[referral.provider][0]}"
        for task, referred, writer in (
                (referral, referral.referred, f"Organization/{syn.CLINICS[referral.clinic][0]}"),
                (referral.successor, referral.redirected_at, redirector)):
            if task is None:
                continue
            started = step_at(task, "in-progress")
            out.append({
                "owner": f"Organization/{syn.PROVIDERS[task.provider][0]}",
                "requester": f"Organization/{syn.CLINICS[task.clinic][0]}",
                "category": syn.PROVIDERS[task.provider][2], "priority": task.priority,
                "referred": referred, "outcome": task.outcome, "patient": patient,
                "accepted": step_at(task, "accepted"), "started": started,
                "completed": step_at(task, "completed"),
                "pairs": pairs(patient, referred, started),
                "written_by": writer})
    return out


def pairs(patient, referred: datetime, started: datetime | None) -> dict[str, tuple]:
    """(baseline, follow-up) per instrument: latest in the 90 days up to the referral, latest
    4 to 12 weeks after care started."""
    if started is None:
        return {}
    out = {}
    for instrument in ("phq-9", "gad-7"):
        scores = [s for s in patient.scores if s.instrument == instrument]
        base = [s for s in scores if referred - timedelta(days=90) <= s.at <= referred]
        follow = [s for s in scores
                  if started + timedelta(weeks=4) <= s.at <= started + timedelta(weeks=12)]
        if base and follow:
            out[instrument] = (max(base, key=lambda s: s.at).value,
                               max(follow, key=lambda s: s.at).value)
    return out


def expected(chosen: list[dict]) -> dict:
    """The figures of a group of Tasks, by the definitions."""
    sent = [t for t in chosen if t["outcome"] != "redirected"]
    accepted = [t for t in sent if t["accepted"]]
    rejected = [t for t in sent if t["outcome"] == "rejected"]
    started = [t for t in sent if t["started"]]
    completed = [t for t in sent if t["completed"]]
    waits = [hours(t["referred"], t["accepted"]) for t in accepted]
    out = {"total": len(chosen), "patients": len({t["patient"].patient_id for t in chosen}),
           "sent": len(sent), "accepted": len(accepted), "started": len(started),
           "completed": len(completed), "rejected": len(rejected),
           "redirected": len(chosen) - len(sent),
           "acceptance_rate": round(len(accepted) / (len(accepted) + len(rejected)), 4)
           if accepted or rejected else None,
           "closed_loop_rate": round(len(completed) / len(sent), 4) if sent else None,
           "accept_median": round(statistics.median(waits), 2) if waits else None,
           "accept_p90": round(nearest_rank(waits, 90), 2) if waits else None,
           "accept_n": len(waits),
           "accept_under_4h": sum(1 for w in waits if w < 4),
           "accept_4w_plus": sum(1 for w in waits if w >= 672)}
    for instrument in ("phq-9", "gad-7"):
        got = [t["pairs"][instrument] for t in sent if instrument in t["pairs"]]
        eligible = [(b, f) for b, f in got if b >= 10]
        out[instrument] = {
            "pairs": len(got), "eligible": len(eligible),
            "responders": sum(1 for b, f in eligible if f <= b / 2),
            "remitters": sum(1 for b, f in eligible if f < 5),
            "mean_change": round(sum(f - b for b, f in got) / len(got), 2) if got else None}
    return out


def small(count: int) -> int | str:
    return f"<{N}" if 0 < count < N else count


# -- the server --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(database, tmp_path_factory):
    server, live = start_web_server(database, tmp_path_factory.mktemp("outcomes"))
    ids = syn.load(server.settings, POP)
    with database.write() as conn:
        token = issue_token(conn, "access", "mh-referral-app", {
            "scope": "user/*.rs", "user": "network-admin", "fhir_user": "Practitioner/none",
            "organization": "Organization/syn-clinic-riverside", "is_admin": True,
            "aud": server.base}, 3600).value
    server.admin = FhirHttp(server.base, headers={"Authorization": f"Bearer {token}"})
    server.task_ids = ids
    yield server
    live.stop()


def metrics(http: FhirHttp, **params) -> dict:
    response = http.get("$referral-metrics", params={**WINDOW, **params})
    assert response.status_code == 200, response.text
    return response.json()


def test_funnel_outcomes_and_times_by_hand(world):
    answer = metrics(world.admin, **{"group-by": "owner"})
    every = tasks()
    want = expected(every)
    got = groups(answer, "all")["all"]
    assert (got["total"], got["funnel.sent"], got["funnel.accepted"], got["funnel.started"],
            got["funnel.completed"]) == (want["total"], want["sent"], want["accepted"],
                                         want["started"], want["completed"])
    assert (want["total"], want["sent"], want["redirected"]) == (64, 60, 4)  # pinned
    assert got["funnel.accepted.lost"] == want["sent"] - want["accepted"]
    assert got["funnel.completed.lost"] == want["started"] - want["completed"]
    assert got["outcome.redirected"] == 4 and got["acceptanceRate"] == want["acceptance_rate"]
    assert got["closedLoopRate"] == want["closed_loop_rate"]
    assert got["duration.accept.median"] == want["accept_median"]
    assert got["duration.accept.p90"] == want["accept_p90"]
    assert got["duration.accept.count"] == want["accept_n"]
    assert got["duration.accept.under-4h"] == want["accept_under_4h"]
    assert got["duration.accept.4w-plus"] == want["accept_4w_plus"]
    by_owner = groups(answer, "owner")
    for owner, name in [(f"Organization/{p[0]}", p[1]) for p in syn.PROVIDERS]:
        mine = expected([t for t in every if t["owner"] == owner])
        row = by_owner[owner]
        assert row["name"] == name
        assert (row["total"], row["funnel.sent"], row["funnel.accepted"],
                row["funnel.completed"]) == (mine["total"], mine["sent"], mine["accepted"],
                                             mine["completed"])
        assert row.get("duration.accept.median") == mine["accept_median"]
        assert row.get("acceptanceRate") == mine["acceptance_rate"]


def test_stalled_counts_by_clock(world):
    """The sweep ran 20 days after the last referral: every Task still waiting or accepted is
    past its clock (3 business days, 7 days); one in care is stalled when care started at
    least 14 days before (nothing changed on it since)."""
    got = groups(metrics(world.admin), "all")["all"]
    outcomes = defaultdict(int)
    for task in tasks():
        outcomes[task["outcome"]] += 1
    quiet = [t for t in tasks() if t["outcome"] == "in-care"
             and t["started"] + timedelta(days=14) <= POP.end]
    assert got["stalled.stalled-not-accepted"] == outcomes["waiting"] > 0
    assert got["stalled.stalled-not-started"] == outcomes["accepted"] > 0
    assert got["stalled.stalled-no-progress"] == len(quiet) > 0


def test_equity_cells_with_suppression(world):
    answer = metrics(world.admin, **{"group-by": "sex,language,race"})
    assert {p["name"]: p.get("valueInteger") for p in answer["parameter"]
            if p["name"] == "smallCellThreshold"} == {"smallCellThreshold": N}
    every = tasks()
    for dimension, attribute in (("sex", "sex"), ("language", "language"), ("race", "race")):
        by_key: dict[str, list] = defaultdict(list)
        for task in every:
            by_key[getattr(task["patient"], attribute)].append(task)
        figures = {key: expected(chosen) for key, chosen in by_key.items()}
        hidden = {k for k, f in figures.items() if f["patients"] < N}
        if len(hidden) == 1:
            hidden.add(min((k for k in figures if k not in hidden),
                           key=lambda k: (figures[k]["patients"], k)))
        got = groups(answer, dimension)
        assert set(got) == set(figures)
        for key, want in figures.items():
            row = got[key]
            if key in hidden:
                assert row["suppressed"] is True
                for name in ("patients", "total"):
                    assert row[name] == (small(want[name]) if want[name] < N
                                         else "suppressed"), (dimension, key, name)
                assert "acceptanceRate" not in row and "duration.accept.median" not in row
            else:
                assert "suppressed" not in row
                assert (row["patients"], row["total"], row["funnel.sent"],
                        row["funnel.completed"]) == (small(want["patients"]),
                                                     small(want["total"]),
                                                     small(want["sent"]),
                                                     small(want["completed"]))
                if want["accept_n"] >= N:
                    assert row["duration.accept.median"] == want["accept_median"]
    sex = groups(answer, "sex")  # pinned: "other" has 3 patients, so "male" hides with it
    assert sex["other"]["patients"] == "<11" and sex["male"]["patients"] == "suppressed"
    assert sex["female"]["patients"] == 34


def test_response_remission_and_mean_change(world):
    answer = metrics(world.admin, **{"group-by": "owner,category"})
    every = tasks()
    for dimension, attribute in (("all", None), ("owner", "owner"), ("category", "category")):
        keys = {"all"} if attribute is None else {t[attribute] for t in every}
        for key in keys:
            chosen = every if attribute is None else [t for t in every if t[attribute] == key]
            want = expected(chosen)
            row = groups(answer, dimension)[key]
            for instrument in ("phq-9", "gad-7"):
                mine = want[instrument]
                assert row[f"screening.{instrument}.pairs"] == mine["pairs"]
                assert row[f"screening.{instrument}.eligible"] == mine["eligible"]
                assert row[f"screening.{instrument}.responders"] == mine["responders"]
                assert row[f"screening.{instrument}.remitters"] == mine["remitters"]
                assert row.get(f"screening.{instrument}.meanChange") == mine["mean_change"]
                if mine["eligible"]:
                    assert row[f"screening.{instrument}.responseRate"] == round(
                        mine["responders"] / mine["eligible"], 4)
    phq = expected(every)["phq-9"]
    assert phq["pairs"] > 10 and 0 < phq["responders"] < phq["eligible"]  # not degenerate


def test_filters_work_for_every_grouping(world):
    clinic = f"Organization/{syn.CLINICS[1][0]}"
    answer = metrics(world.admin, requester=clinic, **{"group-by": "owner,priority,month"})
    mine = [t for t in tasks() if t["requester"] == clinic]
    assert groups(answer, "all")["all"]["total"] == len(mine) > 0
    for owner, row in groups(answer, "owner").items():
        assert row["total"] == len([t for t in mine if t["owner"] == owner])
    for priority, row in groups(answer, "priority").items():
        assert row["total"] == len([t for t in mine if t["priority"] == priority])
    months = groups(answer, "month")
    assert sum(row["total"] for row in months.values()) == len(mine)
    assert {row["name"] for row in months.values()} <= {"June 2026", "July 2026",
                                                        "August 2026"}
    by_role = metrics(world.admin, requester=f"PractitionerRole/{syn.CLINICS[1][0]}-role")
    assert groups(by_role, "requester")[clinic]["total"] == len(mine)
    late = metrics(world.admin, start="2026-07-01", end="2026-08-01")
    assert groups(late, "all")["all"]["total"] == len(
        [t for t in tasks() if datetime(2026, 7, 1, tzinfo=UTC) <= t["referred"]
         < datetime(2026, 8, 1, tzinfo=UTC)])


def test_csv_has_the_same_figures_with_names(world):
    params = {**WINDOW, "group-by": "owner,sex", "_format": "text/csv"}
    response = world.admin.get("$referral-metrics", params=params)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith(
        "text/csv")
    rows = {(r["dimension"], r["key"]): r for r in csv_rows(response.text)}
    answer = metrics(world.admin, **{"group-by": "owner,sex"})
    for dimension in ("owner", "sex"):
        for key, group in groups(answer, dimension).items():
            row = rows[(dimension, key)]
            assert row["name"] == group["name"]
            assert row["total"] == str(group["total"])
            assert row["sent"] == str(group["funnel.sent"])
            assert row["time_to_accept_median_h"] == str(group.get(
                "duration.accept.median", ""))
    assert rows[("owner", "Organization/syn-lakeside")]["name"] == "Lakeside Behavioral Health"


def test_a_provider_counts_only_its_referrals(world):
    """A provider counts the referrals sent to it and the ones it wrote itself (the Tasks
    its redirects created for another provider), nothing else."""
    lakeside = world.network.client_for("syn-lakeside")
    answer = metrics(lakeside, **{"group-by": "owner"})
    org = "Organization/syn-lakeside"
    visible = [t for t in tasks() if org in (t["owner"], t["written_by"])]
    assert any(t["owner"] != org for t in visible)  # not vacuous: redirects it made
    assert set(groups(answer, "owner")) == {t["owner"] for t in visible}
    mine = expected([t for t in visible if t["owner"] == org])
    assert groups(answer, "owner")[org]["total"] == mine["total"]
    assert groups(answer, "all")["all"]["total"] == len(visible)
    # the screenings were written by the clinics and shared with nobody: no pair counts
    assert mine["phq-9"]["pairs"] > 0
    assert groups(answer, "all")["all"]["screening.phq-9.pairs"] == 0
    assert len(visible) < len(tasks())  # other providers' referrals are not counted
    csv = lakeside.get("$referral-metrics", params={**WINDOW, "_format": "text/csv",
                                                    "group-by": "owner"})
    rows = {(r["dimension"], r["key"]): r for r in csv_rows(csv.text)}
    assert rows[("all", "all")]["total"] == str(len(visible))
    assert {k for d, k in rows if d == "owner"} == {t["owner"] for t in visible}


def test_measure_reports_equal_the_metrics(world):
    every = expected(tasks())
    reports = {}
    for measure in ("closed-loop-rate", "median-time-to-accept", "response-rate",
                    "remission-rate"):
        response = world.admin.get(f"Measure/{measure}/$evaluate-measure", params={
            "periodStart": START, "periodEnd": END})
        assert response.status_code == 200, response.text
        reports[measure] = response.json()
        assert reports[measure]["resourceType"] == "MeasureReport"
        assert reports[measure]["period"]["start"].startswith(START)
    closed = reports["closed-loop-rate"]["group"][0]
    counts = {p["code"]["coding"][0]["code"]: p["count"] for p in closed["population"]}
    assert counts == {"initial-population": every["total"], "denominator": every["sent"],
                      "numerator": every["completed"]}
    assert closed["measureScore"]["value"] == every["closed_loop_rate"]
    strata = {s["value"]["text"]: s for s in closed["stratifier"][0]["stratum"]}
    assert set(strata) == {p[1] for p in syn.PROVIDERS}
    median = reports["median-time-to-accept"]["group"][0]["measureScore"]
    assert median == {"value": every["accept_median"], "unit": "h",
                      "system": "http://unitsofmeasure.org", "code": "h"}
    response = reports["response-rate"]["group"]
    assert [g["code"]["text"] for g in response] == ["PHQ-9", "GAD-7"]
    phq = {p["code"]["coding"][0]["code"]: p["count"] for p in response[0]["population"]}
    assert phq == {"initial-population": every["phq-9"]["pairs"],
                   "denominator": every["phq-9"]["eligible"],
                   "numerator": every["phq-9"]["responders"]}
    published = world.admin.get("Measure", params={"_count": 20}).json()
    assert {e["resource"]["id"] for e in published.get("entry", [])} >= set(reports)


def test_evaluate_measure_refuses_bad_input(world):
    bad = world.admin.get("Measure/closed-loop-rate/$evaluate-measure",
                          params={"periodStart": START})
    assert bad.status_code == 400
    assert bad.json()["issue"][0]["expression"] == [
        "Parameters.parameter.where(name='periodEnd').value"]
    subject = world.admin.get("Measure/closed-loop-rate/$evaluate-measure", params={
        "periodStart": START, "periodEnd": END, "subject": "Patient/x"})
    assert subject.status_code == 400


def test_metrics_refuse_bad_input(world):
    for params, name in (({"group-by": "colour"}, "group-by"), ({"start": "June"}, "start"),
                         ({"start": "2026-06-01", "end": "2026-05-01"}, "end"),
                         ({"groupby": "owner"}, "groupby")):
        response = world.admin.get("$referral-metrics", params=params)
        assert response.status_code == 400, (params, response.text)
        issue = response.json()["issue"][0]
        assert issue["expression"] == [f"Parameters.parameter.where(name='{name}').value"]


def test_follow_up_screening_requested_when_care_starts(world):
    started = [t for t in POP.tasks() if step_at(t, "in-progress")]
    bundle = world.admin.get("Task", params={
        "_profile": "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
                    "SDOHCC-TaskForPatient", "_count": 500}).json()
    found = [e["resource"] for e in bundle.get("entry", [])]
    by_referral = defaultdict(list)
    for task in found:
        by_referral[task["partOf"][0]["reference"]].append(task)
    assert len(by_referral) == len(started)
    for referral in started:
        patient = POP.patients[referral.patient]
        start = step_at(referral, "in-progress")
        asked = by_referral[f"Task/{referral.task_id}"]
        instruments = sorted(t["input"][0]["valueCanonical"].split("/")[-1].split("|")[0]
                             for t in asked)
        before = sorted({s.instrument for s in patient.scores if s.at <= referral.referred})
        assert instruments == before
        for task in asked:
            assert task["status"] == "ready" and task["owner"] == task["for"]
            assert task["requester"]["reference"] == (
                f"PractitionerRole/{syn.CLINICS[referral.clinic][0]}-role")
            due = datetime.fromisoformat(task["restriction"]["period"]["start"].replace(
                "Z", "+00:00"))
            assert due == start + timedelta(weeks=6)


def test_rebuild_from_history_gives_the_same_answer(world):
    from fhir_server.features.outcomes import rebuild_database

    params = {**WINDOW, "group-by": "owner,age-band,coverage", "_format": "text/csv"}
    before = world.admin.get("$referral-metrics", params=params).text
    assert rebuild_database(world.db) == 64
    assert world.admin.get("$referral-metrics", params=params).text == before



def test_the_care_team_sees_follow_ups_in_its_tracker(world):
    from tests.web_support import sign_in_http

    clinic = syn.CLINICS[0][0]
    world.network.staff("riverside-nurse", clinic, "Pat", "Nurse")
    browser = sign_in_http(world, "riverside-nurse", "/app")
    referral = next(t for t in POP.tasks() if t.clinic == 0 and t.outcome == "in-care"
                    and step_at(t, "in-progress") and t.task_id.startswith("syn-"))
    due = step_at(referral, "in-progress") + timedelta(weeks=6)
    page = browser.get(f"{world.root}/app/referrals/{referral.task_id}", timeout=60)
    assert page.status_code == 200, page.text
    assert "Follow-up screening" in page.text
    assert f"PHQ-9 follow-up due {due.day} {due:%b %Y}" in page.text
    listing = browser.get(f"{world.root}/app/referrals", params={"status": "in-progress"},
                          timeout=60)
    assert listing.status_code == 200 and "PHQ-9 follow-up due" in listing.text
