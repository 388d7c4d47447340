"""$timeline and $referral-metrics on hand-built histories; published artifacts."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from fhir.resources.R4B.codesystem import CodeSystem
from fhir.resources.R4B.operationdefinition import OperationDefinition
from fhir.resources.R4B.parameters import Parameters

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.workflow.artifacts import code_systems, operation_definitions
from fhir_server.workflow.authorship import author_of, stamp_author
from fhir_server.workflow.canonical import EXT_MODIFIED_BY, STALLED_SYSTEM
from fhir_server.workflow.metrics import metrics_csv, percentile, referral_metrics
from fhir_server.workflow.stalled import mark_stalled
from fhir_server.workflow.timeline import build_timeline
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
    """Six referrals to two CBOs with known timings."""
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
        # other org, outside the window
        history("f", [("requested", -100, REQUESTER), ("accepted", -99, OWNER)],
                owner="Organization/other"),
        # other org in the window, draft only (authored at T0)
        [{**v, "authoredOn": "2026-01-05T09:00:00Z"}
         for v in history("g", [("draft", 0, REQUESTER)], owner="Organization/other")],
    ]


def org_parts(params: dict, ref: str) -> dict:
    for p in params["parameter"]:
        if p["name"] == "organization" and p["part"][0]["valueReference"].get("reference") == ref:
            return p["part"]
    raise AssertionError(ref)


def scalar(parts, name):
    for p in parts:
        if p["name"] == name:
            return next(v for k, v in p.items() if k.startswith("value"))
    return None


def test_metrics_per_owner():
    result = referral_metrics(build_population(), group_by="owner", start=T0 - H,
                              end=T0 + timedelta(days=30))
    Parameters.model_validate(result)
    parts = org_parts(result, "Organization/cbo")
    assert scalar(parts, "total") == 5
    statuses = {p["part"][0]["valueCode"]: p["part"][1]["valueInteger"]
                for p in parts if p["name"] == "status"}
    assert statuses == {"completed": 2, "cancelled": 1, "rejected": 1, "requested": 1}
    assert scalar(parts, "acceptanceRate") == 0.75  # 3 accepted / (3 + 1 rejected)
    assert scalar(parts, "timeToAcceptanceMedian")["value"] == 4.0  # 2, 4, 30
    assert scalar(parts, "timeToAcceptanceP90") == {"value": 30.0, "unit": "h",
                                                    "system": "http://unitsofmeasure.org",
                                                    "code": "h"}
    assert scalar(parts, "timeToFirstServiceMedian")["value"] == 17.0  # 10, 24
    assert scalar(parts, "timeToFirstServiceP90")["value"] == 24.0
    assert scalar(parts, "completionRate") == 0.4
    assert scalar(parts, "stalled") == 1
    reasons = [(p["name"], p["part"][0]["valueString"], p["part"][1]["valueInteger"])
               for p in parts if p["name"].endswith("Reason")]
    assert reasons == [("rejectionReason", "No capacity", 1),
                       ("cancellationReason", "Patient declined", 1)]
    other = org_parts(result, "Organization/other")
    assert scalar(other, "total") == 1
    assert scalar(other, "acceptanceRate") is None and scalar(other, "completionRate") is None


def test_metrics_filter_by_requester_and_window():
    result = referral_metrics(build_population(), group_by="requester", start=None, end=None,
                              organization="Organization/clinic")
    orgs = [p for p in result["parameter"] if p["name"] == "organization"]
    assert len(orgs) == 1
    assert scalar(orgs[0]["part"], "total") == 7
    narrow = referral_metrics(build_population(), group_by="owner", start=T0 + 0.5 * H,
                              end=T0 + 3 * H)
    assert scalar(org_parts(narrow, "Organization/cbo"), "total") == 2  # d and e


def test_metrics_csv():
    result = referral_metrics(build_population(), group_by="owner", start=T0 - H,
                              end=T0 + timedelta(days=30))
    text = metrics_csv(result)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["organization"] for r in rows] == ["Organization/cbo", "Organization/other"]
    cbo = rows[0]
    assert cbo["total"] == "5" and cbo["completed"] == "2" and cbo["draft"] == "0"
    assert cbo["acceptance_rate"] == "0.75"
    assert cbo["time_to_acceptance_median_h"] == "4.0"
    assert cbo["rejection_reasons"] == "No capacity (1)"
    assert cbo["stalled"] == "1"
    assert rows[1]["draft"] == "1" and rows[1]["acceptance_rate"] == ""


def test_percentile_nearest_rank():
    assert percentile([5, 1, 3], 90) == 5
    assert percentile(list(range(1, 11)), 90) == 9
    assert percentile([7], 50) == 7


def test_published_artifacts_are_valid_fhir():
    ops = {o["code"]: o for o in operation_definitions()}
    assert set(ops) == {"redirect", "timeline", "referral-metrics", "assign-recipient"}
    for op in ops.values():
        OperationDefinition.model_validate(op)
    assert ops["redirect"]["instance"] and ops["redirect"]["resource"] == ["Task"]
    assert {p["name"] for p in ops["redirect"]["parameter"]} >= {"target", "reason"}
    assert ops["referral-metrics"]["system"] and not ops["timeline"]["affectsState"]
    (cs,) = code_systems()
    CodeSystem.model_validate(cs)
    assert cs["url"] == STALLED_SYSTEM
    assert {c["code"] for c in cs["concept"]} == {"stalled-not-accepted", "stalled-not-started",
                                                  "stalled-no-progress"}
