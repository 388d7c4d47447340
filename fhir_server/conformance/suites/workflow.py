"""The referral Task workflow: create, read, the state machine, who may change what,
completion with outputs, version-aware updates, and the outcome coming back."""

from __future__ import annotations

from typing import Any

from fhir_server.conformance import resources as fx
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import ref_of
from fhir_server.conformance.model import TestCase
from fhir_server.conformance.requirements import actor_spec, ig, spec
from fhir_server.conformance.scenario import describe, etag_of

GROUP = "workflow"
REASON = {"text": "Conformance kit test"}


def _reread(t: TestContext, task: dict[str, Any], role: str = "source") -> dict[str, Any]:
    return t.data.read(role, ref_of(task))


def _create(t: TestContext) -> None:
    _sr, task = t.data.referral()
    t.check(task.get("status") == "requested", f"the created Task has status "
                                               f"{task.get('status')!r}", "SHOULD")
    again = _reread(t, task)
    t.check(again.get("id") == task["id"] and again.get("focus") == task.get("focus"),
            "reading the created Task back did not return it unchanged")


def _read_referral(t: TestContext) -> None:
    sr, task = t.data.referral()
    role = "recipient"
    resp = t.client(role).get(ref_of(task))
    t.require(resp.status == 200, f"the owner reading {ref_of(task)}: {describe(resp)}")
    t.check(resp.etag, "the Task read has no ETag (versioned-update needs it)", "SHOULD")
    for ref in (task["focus"]["reference"], task["for"]["reference"],
                sr["supportingInfo"][0]["reference"]):
        resp = t.client(role).get(ref)
        t.check(resp.status == 200, f"the owner reading {ref} (referenced by the referral): "
                                    f"{describe(resp)}")


def _legal(t: TestContext) -> None:
    d = t.data
    paths: list[tuple[str, list[tuple[str, str, dict[str, Any]]]]] = [
        ("accept, start, hold, resume, complete", [
            ("recipient", "accepted", {}), ("recipient", "in-progress", {}),
            ("recipient", "on-hold", {"statusReason": REASON}),
            ("recipient", "in-progress", {"statusReason": None}),
            ("recipient", "completed", {"output": "procedure"})]),
        ("reject", [("recipient", "rejected", {"statusReason": REASON})]),
        ("cancel by the requester", [("source", "cancelled", {"statusReason": REASON})]),
        ("accept, fail", [("recipient", "accepted", {}),
                          ("recipient", "failed", {"statusReason": REASON})]),
        ("accept, cancel by the owner", [("recipient", "accepted", {}),
                                         ("recipient", "cancelled", {"statusReason": REASON})]),
    ]
    for label, steps in paths:
        sr, task = d.new_referral()
        for role, status, changes in steps:
            if changes.get("output") == "procedure":
                proc = d.procedure_for("recipient", sr)
                changes = {"output": [fx.resulting_activity(ref_of(proc))]}
            before = task["status"]
            resp = d.update_task(role, task, status=status, **changes)
            if not t.check(resp.status == 200, f"{label}: {role} moving {before} -> {status} "
                                               f"was refused: {describe(resp)}"):
                break
            body = resp.json()
            task = body if isinstance(body, dict) and body.get("meta") else \
                _reread(t, task, role)
            if not t.check(task.get("status") == status, f"{label}: after {before} -> "
                           f"{status} the Task reads {task.get('status')!r}"):
                break


def _illegal(t: TestContext) -> None:
    d = t.data
    sr, task = d.new_referral()
    proc = d.procedure_for("recipient", sr)
    output = [fx.resulting_activity(ref_of(proc))]
    for status, changes in (("completed", {"output": output}), ("in-progress", {}),
                            ("on-hold", {"statusReason": REASON}),
                            ("failed", {"statusReason": REASON})):
        resp = d.update_task("recipient", task, status=status, **changes)
        t.expect_refused(resp, f"requested -> {status} (skipping accepted)")
        if resp.status == 200:
            task = _reread(t, task)
    rejected = d.advance("recipient", d.new_referral()[1], "rejected", statusReason=REASON)
    t.expect_refused(d.update_task("recipient", rejected, status="accepted"),
                     "rejected -> accepted (rejected is final)")
    _sr, done, _proc = d.completed()
    done = _reread(t, done)
    t.expect_refused(d.update_task("recipient", done, status="in-progress"),
                     "completed -> in-progress (completed is final)")
    t.check(_reread(t, done).get("status") == "completed",
            "the completed Task no longer reads completed after the refused change")


def _status_binding(t: TestContext) -> None:
    _sr, task = t.data.new_referral()
    for status in ("received", "ready"):
        resp = t.data.update_task("recipient", task, status=status)
        t.expect_refused(resp, f"status {status!r} on a referral Task")
        if resp.status == 200:
            task = _reread(t, task)


def _owner_limits(t: TestContext) -> None:
    t.need_parties("source", "recipient")
    d = t.data
    other_sr, _other = d.referral()
    sr, task = d.new_referral()
    task = d.advance("recipient", task, "accepted")
    changes = {
        "focus": {"reference": ref_of(other_sr)},
        "priority": "urgent",
        "requester": {"reference": d.orgs()["recipient"]},
        "authoredOn": "2001-01-01T00:00:00Z",
    }
    for element, value in changes.items():
        resp = d.update_task("recipient", task, **{element: value})
        t.expect_refused(resp, f"the owner changing Task.{element}")
    now = _reread(t, task)
    t.check(now.get("focus") == task.get("focus") and now.get("priority") == task.get(
        "priority") and now.get("requester") == task.get("requester"),
        "the Task changed although the owner's edits were refused")
    resp = d.update_task("recipient", now, statusReason={"text": "Waiting for first visit"})
    t.check(resp.status == 200, f"the owner changing only statusReason was refused: "
                                f"{describe(resp)}")
    del sr


def _third_party(t: TestContext) -> None:
    t.need_parties("source", "recipient", "other")
    d = t.data
    _sr, task = d.new_referral()
    task = d.advance("recipient", task, "accepted")
    resp = d.update_task("other", task, status="in-progress")
    t.expect_refused(resp, "an organization that is neither requester nor owner changing "
                           "the Task status")
    resp = d.update_task("other", task, note=[{"text": "not my referral"}])
    t.expect_refused(resp, "an organization that is neither requester nor owner adding a note")
    t.check(_reread(t, task).get("status") == "accepted", "the third party's change was "
                                                          "stored")


def _completion_output(t: TestContext) -> None:
    d = t.data
    sr, task = d.new_referral()
    task = d.advance("recipient", task, "accepted")
    task = d.advance("recipient", task, "in-progress")
    resp = d.update_task("recipient", task, status="completed")
    t.expect_refused(resp, "completing the referral without any Task.output")
    if resp.status == 200:
        return
    proc = d.procedure_for("recipient", sr)
    resp = d.update_task("recipient", task, status="completed",
                         output=[fx.resulting_activity(ref_of(proc))])
    t.check(resp.status == 200, f"completing with a resulting-activity output referencing "
                                f"{ref_of(proc)} was refused: {describe(resp)}")


def _version_aware(t: TestContext) -> None:
    d = t.data
    _sr, task = d.new_referral()
    stale = dict(task)
    task = d.advance("recipient", task, "accepted")
    resp = d.update_task("recipient", stale, status="rejected", statusReason=REASON)
    t.check(resp.status == 412, f"an update with a stale If-Match ({etag_of(stale)}) answered "
                                f"{resp.status}; expected 412")
    t.check(_reread(t, task).get("status") == "accepted", "the stale update was stored")


def _outcome(t: TestContext) -> None:
    sr, task, proc = t.data.completed()
    seen = _reread(t, task, "source")
    t.require(seen.get("status") == "completed", f"the requester reads the Task as "
                                                 f"{seen.get('status')!r}, not completed")
    outputs = [o.get("valueReference", {}).get("reference") for o in seen.get("output") or []]
    t.require(ref_of(proc) in outputs or any(str(o).endswith(ref_of(proc)) for o in outputs),
              f"the completed Task's outputs {outputs} do not reference {ref_of(proc)}")
    resp = t.client("source").get(ref_of(proc))
    t.require(resp.status == 200, f"the requester reading the outcome {ref_of(proc)}: "
                                  f"{describe(resp)}")
    based = [b.get("reference") for b in (resp.json() or {}).get("basedOn") or []]
    t.check(ref_of(sr) in based or any(str(b).endswith(ref_of(sr)) for b in based),
            f"the Procedure's basedOn {based} does not name the referral {ref_of(sr)}")


def _procedure_update(t: TestContext) -> None:
    _sr, _task, proc = t.data.completed()
    current = t.data.read("recipient", ref_of(proc))
    changed = {**current, "note": [{"text": "Attended four sessions"}]}
    resp = t.client("recipient").put(ref_of(proc), changed, headers=etag_of(current))
    t.check(resp.status == 200, f"the recipient updating its Procedure: {describe(resp)}")


def _open_claim(t: TestContext) -> None:
    d = t.data
    _sr, task = d.new_referral(owner=None)
    resp = t.client("recipient").get("Task", params={
        "owner:missing": "true", "status": "requested", "_id": task["id"]})
    body = resp.json() or {}
    ids = [e.get("resource", {}).get("id") for e in body.get("entry") or []]
    t.check(task["id"] in ids, "Task?owner:missing=true&status=requested did not find the "
                               "open referral")
    resp = d.update_task("recipient", task, status="accepted",
                         owner={"reference": d.orgs()["recipient"]})
    t.check(resp.status == 200, f"the recipient claiming the open referral (owner = itself, "
                                f"accepted): {describe(resp)}")


def tests(actor: str) -> list[TestCase]:
    cs = actor_spec(actor)
    create = cs.requirement("Task", "interaction", "create")
    update = cs.requirement("Task", "interaction", "update")
    read = cs.requirement("Task", "interaction", "read")
    perms = spec("task-update-permissions")
    machine = spec("task-state-machine")
    out = [
        TestCase("workflow.task-create", "The requester creates a referral Task (requested)",
                 GROUP, "SHALL", (create, ig("refer-5")), _create),
        TestCase("workflow.referral-read", "The owner reads the Task, its ServiceRequest, "
                 "Patient and Consent", GROUP, "SHALL", (read,), _read_referral),
        TestCase("workflow.legal-transitions", "Every transition of the IG's state diagram is "
                 "accepted from the party that may make it", GROUP, "SHALL",
                 (update, perms, ig("refer-6"), machine), _legal),
        TestCase("workflow.illegal-transitions", "Transitions outside the state diagram are "
                 "refused", GROUP, "SHOULD", (machine,), _illegal),
        TestCase("workflow.status-valueset", "'received' and 'ready' are refused for referral "
                 "Tasks", GROUP, "SHALL", (spec("task-status-binding"),), _status_binding),
        TestCase("workflow.owner-limits", "The owner may change only status, statusReason and "
                 "output", GROUP, "SHALL", (perms,), _owner_limits, ("source", "recipient")),
        TestCase("workflow.third-party", "Neither requester nor owner: no change allowed",
                 GROUP, "SHALL", (perms,), _third_party, ("source", "recipient", "other")),
        TestCase("workflow.completion-output", "Completion needs an output (resulting "
                 "activity)", GROUP, "SHALL", (ig("refer-9"),), _completion_output),
        TestCase("workflow.version-aware-update", "A stale If-Match is refused (412)", GROUP,
                 "SHALL", (spec("fhir-versioned-update"),), _version_aware),
        TestCase("workflow.outcome", "The requester sees completed with the Procedure it can "
                 "read", GROUP, "SHALL",
                 (ig("refer-9"), cs.requirement("Procedure", "interaction", "read")
                  if cs.resource("Procedure") else read), _outcome),
        TestCase("workflow.open-referral-claim", "An open referral (no owner) is found and "
                 "claimed", GROUP, "MAY", (spec("task-owner-open"),), _open_claim),
    ]
    if cs.resource("Procedure"):
        out.append(TestCase("workflow.procedure-update", "The recipient updates its Procedure",
                            GROUP, "SHALL", (cs.requirement("Procedure", "interaction",
                                                            "update"),), _procedure_update))
    return out
