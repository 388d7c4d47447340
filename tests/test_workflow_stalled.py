"""Stalled-referral detection with an injected clock (business days Mon-Fri)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from fhir_server.workflow.canonical import STALLED_SYSTEM
from fhir_server.workflow.stalled import (
    Deadline,
    StalledPolicy,
    activity_points,
    clear_on_move,
    clear_stalled,
    current_mark,
    evaluate_stalled,
    mark_stalled,
    plan_sweep,
)
from fhir_server.workflow.times import add_business_days
from tests.test_workflow_task_rules import make_task

FRI_5PM = datetime(2026, 11, 27, 17, 0, tzinfo=UTC)  # a Friday
H = timedelta(hours=1)


def at(status, when):
    return [("requested", when)] if status == "requested" else [("requested", when - 2 * H),
                                                                (status, when)]


def test_business_days_skip_weekends_and_holidays():
    assert add_business_days(FRI_5PM, 1) == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    assert add_business_days(FRI_5PM, 3) == datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    saturday = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
    assert add_business_days(saturday, 1) == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert add_business_days(FRI_5PM, 1, holidays={date(2026, 11, 30)}) == \
        datetime(2026, 12, 1, 17, 0, tzinfo=UTC)


@pytest.mark.parametrize(("priority", "due"), [
    ("stat", FRI_5PM + H),
    ("asap", FRI_5PM + 4 * H),
    ("urgent", datetime(2026, 11, 30, 17, 0, tzinfo=UTC)),
    ("routine", datetime(2026, 12, 2, 17, 0, tzinfo=UTC)),
    (None, datetime(2026, 12, 2, 17, 0, tzinfo=UTC)),
])
def test_acceptance_deadline_per_priority(priority, due):
    task = make_task("requested", **({"priority": priority} if priority else {}))
    points = at("requested", FRI_5PM)
    before = evaluate_stalled(task, points, now=due - timedelta(seconds=1))
    assert not before.stalled and before.due == due and before.code is None
    after = evaluate_stalled(task, points, now=due)
    assert after.stalled and after.code == "stalled-not-accepted"
    assert after.since == FRI_5PM


def test_urgent_over_the_weekend_is_not_stalled_on_sunday():
    task = make_task("requested", priority="urgent")
    sunday = datetime(2026, 11, 29, 23, 0, tzinfo=UTC)
    assert not evaluate_stalled(task, at("requested", FRI_5PM), now=sunday).stalled


def test_accepted_not_started_and_in_progress_without_update():
    accepted = make_task("accepted")
    points = at("accepted", FRI_5PM)
    assert not evaluate_stalled(accepted, points, now=FRI_5PM + timedelta(days=7) - H).stalled
    verdict = evaluate_stalled(accepted, points, now=FRI_5PM + timedelta(days=7))
    assert verdict.code == "stalled-not-started"
    running = make_task("in-progress")
    points = [("requested", FRI_5PM), ("accepted", FRI_5PM + H),
              ("in-progress", FRI_5PM + 2 * H), ("in-progress", FRI_5PM + timedelta(days=5))]
    last = FRI_5PM + timedelta(days=5)
    assert not evaluate_stalled(running, points, now=last + timedelta(days=14) - H).stalled
    assert evaluate_stalled(running, points, now=last + timedelta(days=14)).code == \
        "stalled-no-progress"
    for status in ("on-hold", "completed", "draft", "cancelled"):
        assert not evaluate_stalled(make_task(status), at(status, FRI_5PM),
                                    now=FRI_5PM + timedelta(days=365)).stalled


def test_status_that_returned_counts_from_its_latest_run():
    task = make_task("in-progress")
    points = [("in-progress", FRI_5PM), ("on-hold", FRI_5PM + timedelta(days=20)),
              ("in-progress", FRI_5PM + timedelta(days=30))]
    assert not evaluate_stalled(task, points, now=FRI_5PM + timedelta(days=40)).stalled


def test_configurable_policy_and_timezone():
    policy = StalledPolicy.from_strings({"urgent": "2h", "accepted": "2bd",
                                         "timezone": "America/New_York",
                                         "holidays": "2026-11-30"})
    assert policy.acceptance["urgent"] == Deadline(2, "hours")
    task = make_task("requested", priority="urgent")
    assert evaluate_stalled(task, at("requested", FRI_5PM), now=FRI_5PM + 2 * H,
                            policy=policy).stalled
    # Friday 17:00 UTC = 12:00 New York; 2 business days skipping Monday (holiday) -> Wed 12:00
    verdict = evaluate_stalled(make_task("accepted"), at("accepted", FRI_5PM),
                               now=FRI_5PM, policy=policy)
    assert verdict.due == datetime(2026, 12, 2, 17, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        StalledPolicy.from_strings({"urgent": "soon"})
    with pytest.raises(ValueError):
        StalledPolicy.from_strings({"weekly": "1d"})


def test_mark_and_clear_keep_other_business_status():
    task = make_task("requested", businessStatus={"coding": [{"system": "urn:local",
                                                              "code": "waitlist"}],
                                                  "text": "On waitlist"})
    marked = mark_stalled(task, "stalled-not-accepted")
    assert current_mark(marked) == "stalled-not-accepted"
    assert len(marked["businessStatus"]["coding"]) == 2
    assert marked["businessStatus"]["text"] == "On waitlist"
    remarked = mark_stalled(marked, "stalled-not-started")
    assert [c["code"] for c in remarked["businessStatus"]["coding"]] == [
        "waitlist", "stalled-not-started"]
    assert clear_stalled(remarked)["businessStatus"] == task["businessStatus"]
    plain = make_task("requested")
    assert clear_stalled(mark_stalled(plain)) == plain
    assert "businessStatus" not in task.get("meta", {})
    with pytest.raises(ValueError):
        mark_stalled(plain, "late")


def test_mark_cleared_when_task_moves():
    marked = mark_stalled(make_task("requested"))
    moved = {**marked, "status": "accepted"}
    assert current_mark(clear_on_move(marked, moved)) is None
    same = {**marked, "note": [{"text": "x"}]}
    assert current_mark(clear_on_move(marked, same)) == "stalled-not-accepted"


def version(n, status, when, **extra):
    task = make_task(status, **extra)
    task["meta"] = {"versionId": str(n), "lastUpdated": when.isoformat()}
    return task


def test_activity_points_ignore_the_sweeps_own_writes():
    v1 = version(1, "in-progress", FRI_5PM)
    v2 = mark_stalled(version(2, "in-progress", FRI_5PM + timedelta(days=15)),
                      "stalled-no-progress")
    v3 = version(3, "in-progress", FRI_5PM + timedelta(days=16), note=[{"text": "called"}])
    assert activity_points([v1, v2]) == [("in-progress", FRI_5PM)]
    assert activity_points([v1, v2, v3])[-1] == ("in-progress", FRI_5PM + timedelta(days=16))


def test_sweep_marks_changes_and_clears_with_events():
    stale = make_task("requested", id="a", priority="stat")
    fresh = make_task("requested", id="b", priority="routine")
    already = mark_stalled(make_task("requested", id="c", priority="stat"))
    recovered = mark_stalled(make_task("accepted", id="d"), "stalled-not-accepted")
    now = FRI_5PM + 2 * H
    changes = plan_sweep([(stale, at("requested", FRI_5PM)), (fresh, at("requested", FRI_5PM)),
                          (already, at("requested", FRI_5PM)),
                          (recovered, at("accepted", FRI_5PM))], now=now)
    by_id = {c.task["id"]: c for c in changes}
    assert set(by_id) == {"a", "d"}
    assert current_mark(by_id["a"].task) == "stalled-not-accepted"
    assert by_id["a"].event == {"type": "referral-stalled", "task": "Task/a",
                                "status": "requested", "code": "stalled-not-accepted",
                                "at": "2026-11-27T19:00:00Z", "since": "2026-11-27T17:00:00Z",
                                "due": "2026-11-27T18:00:00Z"}
    assert current_mark(by_id["d"].task) is None
    assert by_id["d"].event["type"] == "referral-unstalled"
    coding = by_id["a"].task["businessStatus"]["coding"][0]
    assert coding["system"] == STALLED_SYSTEM


def test_fallback_to_last_modified_without_history():
    task = make_task("requested", priority="stat", lastModified="2026-11-27T17:00:00Z")
    assert evaluate_stalled(task, [], now=FRI_5PM + H).stalled
