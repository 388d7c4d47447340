"""$timeline and $referral-metrics on hand-built histories; published artifacts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.operationdefinition import OperationDefinition
from fhir.resources.R4B.parameters import Parameters

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.interactions.operation_definitions import definitions as operation_definitions
from fhir_server.workflow.artifacts import code_systems
from fhir_server.workflow.authorship import author_of, stamp_author
from fhir_server.workflow.canonical import EXT_MODIFIED_BY, EXT_REDIRECTED_TO, STALLED_SYSTEM
from fhir_server.workflow.metrics import (
    COLUMNS,
    MetricsQuery,
    answer,
    metrics_csv,
    parameters,
    percentile,
)
from fhir_server.workflow.referral_facts import from_history, instant_us
from fhir_server.workflow.stalled import mark_stalled
from fhir_server.workflow.timeline import build_timeline
from tests.outcomes_support import groups
from tests.test_workflow_task_rules import OWNER, REQUESTER, make_task

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)


def history(task_id: str, steps: list[tuple], owner="Organization/cbo",
            requester="Organization/clinic") -> list[dict]:
    """Versions from (status, hours after T0, ctx, reason) steps."""
    out = []
    for n, (status, hours, ctx, *rest) in enumerate(steps, start=1):
        task = make_task(status, id=task_id, owner=owner, requester=requester)
        if rest and rest[0]:
            task["statusReason"] = {"text": rest[0]}
        if len(rest) > 1 and rest[1]:
            task = mark_stalled(task, rest[1])
        task = stamp_author(task, ctx)
        task["meta"].update({"versionId": str(n),
                             "lastUpdated": (T0 + hours * H).isoformat().replace("+00:00", "Z")})
        out.append(task)
    return out


def test_authorship_stamp_overwrites_client_value():
    spoofed = {"resourceType": "Task", "meta": {"extension": [
        {"url": EXT_MODIFIED_BY, "valueReference": {"reference": "Organization/evil"}}]}}
    stamped = stamp_author(spoofed, AccessContext(organization="Organization/cbo",
                                                  client_id="cbo-app"))
    assert author_of(stamped) == {"reference": "Organization/cbo", "display": "cbo-app"}
    assert author_of(stamp_author({}, SYSTEM)) == {"display": "system"}
    assert author_of({}) is None


def test_timeline_orders_status_changes_with_who_and_when():
    versions = history("t1", [
        ("requested", 0, REQUESTER),
        ("requested", 1, REQUESTER),          # a non-status edit: no event
        ("accepted", 5, OWNER),
        ("accepted", 80, SYSTEM, None, "stalled-not-started"),
        ("in-progress", 90, OWNER),
        ("on-hold", 100, OWNER, "client unwell"),
        ("in-progress", 120, OWNER),
    ])
    versions[-1]["extension"] = [{"url": "http://hl7.org/fhir/StructureDefinition/task-replaces",
                                  "valueReference": {"reference": "Task/t0"}}]
    timeline = build_timeline(list(reversed(versions)) + [None])
    Parameters.model_validate(timeline)
    params = timeline["parameter"]
    assert params[0] == {"name": "task", "valueReference": {"reference": "Task/t1"}}
    assert params[1] == {"name": "replaces", "valueReference": {"reference": "Task/t0"}}
    events = [{p["name"]: next(v for k, v in p.items() if k.startswith("value"))
               for p in e["part"]} for e in params if e["name"] == "event"]
    assert [(e["kind"], e.get("status"), e.get("previousStatus")) for e in events] == [
        ("status", "requested", None), ("status", "accepted", "requested"),
        ("stalled", "accepted", "accepted"), ("status", "in-progress", "accepted"),
        ("unstalled", "in-progress", "accepted"),
        ("status", "on-hold", "in-progress"), ("status", "in-progress", "on-hold")]
    assert [e["version"] for e in events] == ["1", "3", "4", "5", "5", "6", "7"]
    assert events[0]["by"] == {"reference": "Practitioner/dr",
                               "display": "Practitioner/dr (Organization/clinic)"}
    assert events[1]["by"] == {"reference": "Organization/cbo"}
    assert events[1]["time"] == "2026-01-05T14:00:00Z"
    assert events[2]["businessStatus"] == "stalled-not-started"
    assert events[5]["statusReason"] == "client unwell"


def build_population() -> list[list[dict]]:
    """Referrals to two CBOs with known timings."""
    redirected = history("r", [("requested", 0, REQUESTER),
                               ("rejected", 1, OWNER, "Better fit elsewhere")])
    redirected[-1]["extension"] = [{"url": EXT_REDIRECTED_TO,
                                    "valueReference": {"reference": "Task/f"}}]
    return [
        # cbo: accepted after 2h, started at 24h, completed
        history("a", [("requested", 0, REQUESTER), ("accepted", 2, OWNER),
                      ("in-progress", 24, OWNER), ("completed", 48, OWNER)]),
        # cbo: accepted after 4h, completed directly at 10h (first service = completion)
        history("b", [("requested", 0, REQUESTER), ("accepted", 4, OWNER),
                      ("completed", 10, OWNER)]),
        # cbo: accepted after 30h, then cancelled by the requester
        history("c", [("requested", 0, REQUESTER), ("accepted", 30, OWNER),
                      ("cancelled", 40, REQUESTER, "Patient declined")]),
        # cbo: rejected
        history("d", [("requested", 1, REQUESTER), ("rejected", 3, OWNER, "No capacity")]),
        # cbo: still requested and stalled
        history("e", [("requested", 2, REQUESTER),
                      ("requested", 90, SYSTEM, None, "stalled-not-accepted")]),
        # cbo: redirected to another provider (not a rejection)
        redirected,
        # other org, outside the window
        history("f", [("requested", -100, REQUESTER), ("accepted", -99, OWNER)],
                owner="Organization/other"),
        # other org in the window, draft only (authored at T0)
        [{**v, "authoredOn": "2026-01-05T09:00:00Z"}
         for v in history("g", [("draft", 0, REQUESTER)], owner="Organization/other")],
    ]


def rows_of(histories: list[list[dict]]) -> list[tuple]:
    """Referral rows (metrics.COLUMNS) from histories, the way the facts table holds them."""
    rows = []
    for versions in histories:
        facts = from_history([(instant_us(v["meta"]["lastUpdated"]), v) for v in versions])
        values = {"status": facts.status, "redirected": facts.redirected,
                  "stalled": facts.stalled, "status_reason": facts.status_reason,
                  "requester": facts.requester, "owner": facts.owner,
                  "priority": facts.priority, "patient_id": facts.patient_id,
                  "referred_at": facts.referred_at, "accepted_at": facts.accepted_at,
                  "started_at": facts.started_at, "completed_at": facts.completed_at}
        rows.append(tuple(values.get(c) for c in COLUMNS))
    return rows


def run(query: MetricsQuery, rows: list[tuple] | None = None) -> dict:
    start, end = query.start, query.end
    kept = [r for r in rows or rows_of(build_population())
            if (start is None or r[COLUMNS.index("referred_at")] >= start)
            and (end is None or r[COLUMNS.index("referred_at")] < end)]
    result = parameters(answer(kept, query, {}, 11))
    Parameters.model_validate(result)
    return result


def us(at: datetime) -> int:
    return int(at.timestamp() * 1_000_000)


def test_metrics_per_owner():
    result = run(MetricsQuery(("all", "owner"), us(T0 - H), us(T0 + timedelta(days=30))))
    cbo = groups(result, "owner")["Organization/cbo"]
    assert cbo["total"] == 6 and cbo["funnel.sent"] == 5  # the redirect counts once
    assert {k: v for k, v in cbo.items() if k.startswith("outcome.")} == {
        "outcome.completed": 2, "outcome.cancelled": 1, "outcome.rejected": 1,
        "outcome.waiting": 1, "outcome.redirected": 1}
    assert cbo["status.rejected"] == 2  # the redirected Task is rejected as a status
    assert (cbo["funnel.accepted"], cbo["funnel.started"], cbo["funnel.completed"]) == (3, 2, 2)
    assert (cbo["funnel.accepted.lost"], cbo["funnel.started.lost"],
            cbo["funnel.completed.lost"]) == (2, 1, 0)
    assert cbo["acceptanceRate"] == 0.75  # 3 accepted / (3 + 1 rejected): no redirect
    assert cbo["duration.accept.median"] == 4.0  # 2, 4, 30
    assert cbo["duration.accept.p90"] == 30.0
    assert cbo["duration.accept.count"] == 3 and cbo["duration.accept.under-4h"] == 1
    assert cbo["duration.accept.4-24h"] == 1 and cbo["duration.accept.1-3d"] == 1
    assert cbo["duration.first-service.median"] == 17.0  # 10, 24
    assert cbo["duration.first-service.p90"] == 24.0
    assert cbo["duration.completion.median"] == 29.0  # 10, 48
    assert cbo["closedLoopRate"] == 0.4  # 2 completed / 5 sent
    assert cbo["stalled.stalled-not-accepted"] == 1 and cbo["stalled.stalled-no-progress"] == 0
    assert cbo["rejectionReason"] == [("No capacity", 1)]
    assert cbo["cancellationReason"] == [("Patient declined", 1)]
    other = groups(result, "owner")["Organization/other"]
    assert other["total"] == 1 and other["outcome.draft"] == 1 and other["funnel.sent"] == 0
    assert "acceptanceRate" not in other and "closedLoopRate" not in other
    everyone = groups(result, "all")["all"]
    assert everyone["total"] == 7 and everyone["funnel.sent"] == 5


def test_metrics_filter_by_requester_and_window():
    result = run(MetricsQuery(("all", "requester")))
    assert list(groups(result, "requester")) == ["Organization/clinic"]
    assert groups(result, "requester")["Organization/clinic"]["total"] == 8
    narrow = run(MetricsQuery(("all", "owner"), us(T0 + 0.5 * H), us(T0 + 3 * H)))
    assert groups(narrow, "owner")["Organization/cbo"]["total"] == 2  # d and e


def test_metrics_csv():
    query = MetricsQuery(("all", "owner"), us(T0 - H), us(T0 + timedelta(days=30)))
    rows = [r for r in rows_of(build_population())
            if r[COLUMNS.index("referred_at")] >= query.start]
    text = metrics_csv(answer(rows, query, {"Organization/cbo": "Community Care"}, 11))
    table = list(csv.DictReader(io.StringIO(text)))
    assert [(r["dimension"], r["key"]) for r in table] == [
        ("all", "all"), ("owner", "Organization/cbo"), ("owner", "Organization/other")]
    cbo = table[1]
    assert cbo["name"] == "Community Care" and cbo["total"] == "6" and cbo["completed"] == "2"
    assert cbo["outcome_redirected"] == "1" and cbo["outcome_draft"] == "0"
    assert cbo["acceptance_rate"] == "0.75"
    assert cbo["time_to_accept_median_h"] == "4.0"
    assert cbo["rejection_reasons"] == "No capacity (1)"
    assert cbo["stalled_not_accepted"] == "1"
    assert table[2]["outcome_draft"] == "1" and table[2]["acceptance_rate"] == ""


def test_percentile_nearest_rank():
    assert percentile([5, 1, 3], 90) == 5
    assert percentile(list(range(1, 11)), 90) == 9
    assert percentile([7], 50) == 7


def test_published_artifacts_are_valid_fhir():
    ops = {o["code"]: o for o in operation_definitions()}
    assert {"redirect", "timeline", "referral-metrics", "assign-recipient"} <= set(ops)
    for op in ops.values():
        OperationDefinition.model_validate(op)
    assert ops["redirect"]["instance"] and ops["redirect"]["resource"] == ["Task"]
    assert {p["name"] for p in ops["redirect"]["parameter"]} >= {"target", "reason"}
    assert ops["referral-metrics"]["system"] and not ops["timeline"]["affectsState"]
    published = {r["url"]: r for r in code_systems()}
    assert len(published) == 3  # stalled marks, status reasons and the reasons' ValueSet
    cs = published[STALLED_SYSTEM]
    CodeSystem.model_validate(cs)
    assert {c["code"] for c in cs["concept"]} == {"stalled-not-accepted", "stalled-not-started",
                                                  "stalled-no-progress"}
