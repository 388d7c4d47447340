"""Coordination platform (refer-1): a referral sent to the platform becomes a filler-order
ServiceRequest based on the original and a sub-Task `partOf` the source Task; the recipient's
outcome comes back to the source Task."""

from __future__ import annotations

import time
from typing import Any

from fhir_server.conformance import resources as fx
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import bundle_resources, ref_of
from fhir_server.conformance.model import TestCase
from fhir_server.conformance.requirements import ig
from fhir_server.conformance.scenario import Prerequisite, Scenario, describe

GROUP = "platform"
ASSIGN = "assign-recipient"


def _find_subtask(s: Scenario, source_task: dict[str, Any], wait: float) -> dict[str, Any]:
    """The platform's sub-Task for `source_task`, as the recipient sees it."""
    deadline = time.monotonic() + wait
    client = s.clients["recipient"]
    while True:
        for params in ({"part-of": ref_of(source_task)},
                       {"owner": s.orgs()["recipient"], "status": "requested"}):
            resp = client.get("Task", params=params)
            for task in bundle_resources(resp.json()):
                parts = [p.get("reference", "") for p in task.get("partOf") or []]
                if any(p.endswith(ref_of(source_task)) for p in parts):
                    return task
        if time.monotonic() > deadline:
            raise Prerequisite(f"no Task partOf {ref_of(source_task)} appeared for the "
                               f"recipient within {wait:.0f} s")
        time.sleep(0.5)


def forwarded(t: TestContext) -> dict[str, Any]:
    """A referral sent to the platform and forwarded to the recipient (memoized)."""
    def build() -> dict[str, Any]:
        s = t.data
        sr, task = s.new_referral(owner="platform")
        if ASSIGN in t.session.server_operations("Task"):
            body = {"resourceType": "Parameters", "parameter": [
                {"name": "recipient", "valueReference": {"reference": s.orgs()["recipient"]}},
                {"name": "note", "valueString": "Routed by the conformance kit"}]}
            resp = s.clients["platform"].post(f"{ref_of(task)}/${ASSIGN}", body)
            if resp.status != 200:
                raise Prerequisite(f"${ASSIGN} on {ref_of(task)}: {describe(resp)}")
        sub = _find_subtask(s, task, t.config.wait)
        return {"sr": sr, "task": task, "sub": sub}
    return t.data._once("platform-forward", build)


def _partof(t: TestContext) -> None:
    f = forwarded(t)
    sub = f["sub"]
    parts = [p.get("reference", "") for p in sub.get("partOf") or []]
    t.check(any(p.endswith(ref_of(f["task"])) for p in parts),
            f"the platform's Task {ref_of(sub)} is not partOf {ref_of(f['task'])}")
    t.check(sub.get("owner", {}).get("reference", "").endswith(t.data.orgs()["recipient"]),
            f"the platform's Task is owned by {sub.get('owner')}, not the recipient", "SHOULD")


def _filler_order(t: TestContext) -> None:
    f = forwarded(t)
    focus = f["sub"].get("focus", {}).get("reference", "")
    t.require(focus, "the platform's Task has no focus")
    resp = t.client("recipient").get(focus)
    t.require(resp.status == 200, f"the recipient reading the platform's ServiceRequest "
                                  f"{focus}: {describe(resp)}")
    sr = resp.json() or {}
    t.check(sr.get("intent") == "filler-order", f"the platform's ServiceRequest has intent "
                                                f"{sr.get('intent')!r}, not filler-order")
    based = [b.get("reference", "") for b in sr.get("basedOn") or []]
    t.check(any(b.endswith(ref_of(f["sr"])) for b in based),
            f"the platform's ServiceRequest basedOn {based} does not reference the original "
            f"{ref_of(f['sr'])}")
    t.check(focus != ref_of(f["sr"]) and not focus.endswith("/" + ref_of(f["sr"])),
            "the platform's Task points at the original ServiceRequest instead of its own",
            "SHOULD")


def _outcome(t: TestContext) -> None:
    f = forwarded(t)
    s = t.data
    sub = s.advance("recipient", f["sub"], "accepted")
    sub = s.advance("recipient", sub, "in-progress")
    focus = sub["focus"]["reference"]
    platform_sr = s.read("recipient", focus)
    proc = s.create("recipient", fx.procedure(s.run_id, s.next_n(), ref_of(s.patient()),
                                              ref_of(platform_sr), s.orgs()["recipient"]),
                    "the recipient's Procedure")
    s.advance("recipient", sub, "completed", output=[fx.resulting_activity(ref_of(proc))])
    deadline = time.monotonic() + t.config.wait
    source = s.read("source", ref_of(f["task"]))
    while source.get("status") != "completed" and time.monotonic() < deadline:
        time.sleep(0.5)
        source = s.read("source", ref_of(f["task"]))
    t.require(source.get("status") == "completed",
              f"the source Task reads {source.get('status')!r} after the recipient completed "
              "the platform's Task")
    outputs = [o.get("valueReference", {}).get("reference", "") for o in
               source.get("output") or []]
    t.check(any(o.endswith(ref_of(proc)) for o in outputs),
            f"the source Task's outputs {outputs} do not reference the recipient's "
            f"{ref_of(proc)}")


def tests(actor: str) -> list[TestCase]:
    if actor != "coordination-platform":
        return []
    refer1 = ig("refer-1")
    return [
        TestCase("platform.subtask-partof", "The platform's Task for the recipient is partOf "
                 "the source Task", GROUP, "SHALL", (refer1,), _partof),
        TestCase("platform.filler-order", "The platform's ServiceRequest is a filler-order "
                 "based on the original", GROUP, "SHALL", (refer1,), _filler_order),
        TestCase("platform.outcome", "The recipient's outcome completes the source Task with "
                 "the Procedure", GROUP, "SHALL", (refer1, ig("refer-9")), _outcome),
    ]
