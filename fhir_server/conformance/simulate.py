"""Simulated partners, so an implementer can exercise a server end to end with no second
system: a referral recipient that accepts, starts and completes the Tasks addressed to its
organization, and a referral source that refers patients and waits for the outcome."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any, TextIO

from fhir_server.conformance import resources as fx
from fhir_server.conformance.config import RunConfig
from fhir_server.conformance.http import FhirClient, KitError, bundle_resources, ref_of
from fhir_server.conformance.receiver import Receiver
from fhir_server.conformance.runner import make_clients
from fhir_server.conformance.scenario import describe, etag_of

FINAL_BAD = {"rejected", "cancelled", "failed", "entered-in-error"}


class Partner:
    """Shared plumbing: one client, printing each step."""

    def __init__(self, config: RunConfig, out: TextIO) -> None:
        self.config = config
        self.client: FhirClient = make_clients(config)["source"]
        self.org = config.parties["source"].organization
        self.out = out
        if not self.org:
            raise KitError("give --organization: the Organization this partner acts for")

    def say(self, text: str) -> None:
        self.out.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        self.out.flush()

    def create(self, resource: dict[str, Any]) -> dict[str, Any]:
        resp = self.client.post(resource["resourceType"], resource,
                                headers={"Prefer": "return=representation"})
        body = resp.json()
        if resp.status not in (200, 201) or not isinstance(body, dict) or not body.get("id"):
            raise KitError(f"creating a {resource['resourceType']} was refused: "
                           f"{describe(resp)}")
        return body

    def put_task(self, task: dict[str, Any], **changes: Any) -> dict[str, Any]:
        body = {k: v for k, v in {**task, **changes}.items() if v is not None}
        resp = self.client.put(ref_of(task), body, headers=etag_of(task))
        if resp.status != 200:
            raise KitError(f"updating {ref_of(task)} to {changes.get('status')} was refused: "
                           f"{describe(resp)}")
        fresh = resp.json()
        return fresh if isinstance(fresh, dict) and fresh.get("id") else \
            self.client.get(ref_of(task)).json()


class SimulatedRecipient(Partner):
    """Finds Tasks owned by its organization (polling or a Subscription) and works them."""

    caught_up = False  # subscribe mode: the first pass polls for what is already waiting

    def find_new(self, seen: set[str], receiver: Receiver | None) -> list[dict[str, Any]]:
        params: dict[str, str] = {"owner": self.org, "status": "requested",
                                  "_sort": "-_lastUpdated"}
        if receiver is not None and self.caught_up:
            ids = {str(part.get("valueReference", {}).get("reference", "")).rsplit("/", 1)[-1]
                   for n in receiver.received if n.kind == "event-notification"
                   for ev in n.params("notification-event") for part in ev.get("part") or []
                   if part.get("name") == "focus"} - seen
            if not ids:
                return []
            params["_id"] = ",".join(sorted(ids))
        self.caught_up = True
        resp = self.client.get("Task", params=params)
        return [t for t in bundle_resources(resp.json()) if t.get("id") not in seen]

    def work(self, task: dict[str, Any]) -> None:
        self.say(f"received {ref_of(task)} ({task.get('priority', 'routine')}) for "
                 f"{task.get('for', {}).get('reference')}")
        sr_ref = task["focus"]["reference"]
        sr = self.client.get(sr_ref).json() or {}
        service = ((sr.get("code") or {}).get("coding") or [{}])[0]
        self.say(f"  read {sr_ref}: {service.get('display') or service.get('code')}")
        task = self.put_task(task, status="accepted")
        self.say(f"  accepted {ref_of(task)}")
        task = self.put_task(task, status="in-progress")
        self.say(f"  started {ref_of(task)}")
        created = self.create(fx.procedure(uuid.uuid4().hex[:10], 1, task["for"]["reference"],
                                           sr_ref, self.org))
        self.say(f"  recorded the outcome {ref_of(created)} "
                 f"({fx.PROCEDURE_CODE['display']})")
        task = self.put_task(task, status="completed",
                             output=[fx.resulting_activity(ref_of(created))])
        self.say(f"  completed {ref_of(task)} with output {ref_of(created)}")

    def run(self, count: int, mode: str, interval: float, timeout: float,
            listen: str, callback: str) -> int:
        receiver = None
        if mode == "subscribe":
            receiver = Receiver(listen, callback)
            sub = self.create(fx.subscription(receiver.url, f"Task?owner={self.org}"))
            self.say(f"subscribed: Subscription/{sub['id']} -> {receiver.url}")
        self.say(f"waiting for referrals owned by {self.org} ({mode})")
        seen: set[str] = set()
        done = failed = 0
        deadline = time.monotonic() + timeout
        try:
            while done + failed < count and time.monotonic() < deadline:
                for task in self.find_new(seen, receiver):
                    seen.add(task["id"])
                    try:
                        self.work(task)
                        done += 1
                    except KitError as exc:
                        self.say(f"  could not complete {ref_of(task)}: {exc}")
                        failed += 1
                    if done + failed >= count:
                        break
                else:
                    time.sleep(interval if receiver is None else 0.2)
        finally:
            if receiver is not None:
                self.client.delete(f"Subscription/{sub['id']}")
                receiver.stop()
        self.say(f"completed {done} referral(s), {failed} failed")
        return 0 if done >= count else 1


class SimulatedSource(Partner):
    """Refers patients to `--recipient` and waits until each outcome comes back."""

    def refer(self, recipient: str, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
        run = "sim" + uuid.uuid4().hex[:10]
        patient = self.create(fx.patient(run, n))
        self.say(f"created {ref_of(patient)}")
        doc = self.create(fx.document(run, ref_of(patient)))
        consent = self.create(fx.consent(run, ref_of(patient), self.org, ref_of(doc)))
        self.say(f"created {ref_of(consent)} (disclosure to the recipient)")
        sr = self.create(fx.service_request(run, n, ref_of(patient), self.org, recipient,
                                            ref_of(consent)))
        self.say(f"created {ref_of(sr)} ({fx.SERVICE_CODE['display']})")
        task = self.create(fx.referral_task(run, n, ref_of(sr), ref_of(patient), self.org,
                                            recipient))
        self.say(f"referred: {ref_of(task)} requested, owner {recipient}")
        return sr, task

    def check_outcome(self, sr: dict[str, Any], task: dict[str, Any]) -> bool:
        ok = True
        for output in task.get("output") or []:
            ref = (output.get("valueReference") or {}).get("reference")
            if not ref:
                continue
            resp = self.client.get(ref)
            proc = resp.json() or {}
            based = [b.get("reference", "") for b in proc.get("basedOn") or []]
            good = resp.status == 200 and any(b.endswith(ref_of(sr)) for b in based)
            ok = ok and good
            self.say(f"  outcome {ref}: {proc.get('status')}, based on {based}"
                     + ("" if good else "  <-- does not answer this referral"))
        if not task.get("output"):
            self.say("  the completed Task has no output")
            return False
        if ok:
            fresh = self.client.get(ref_of(sr)).json() or sr
            resp = self.client.put(ref_of(sr), {**fresh, "status": "completed"},
                                   headers=etag_of(fresh))
            closed = "completed" if resp.status == 200 else describe(resp)
            self.say(f"  closed {ref_of(sr)}: {closed}")
        return ok

    def run(self, recipient: str, count: int, interval: float, timeout: float) -> int:
        if not recipient:
            raise KitError("give --recipient: the Organization to refer to")
        open_: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        for n in range(1, count + 1):
            sr, task = self.refer(recipient, n)
            open_[task["id"]] = (sr, task)
        results: dict[str, bool] = {}
        deadline = time.monotonic() + timeout
        while open_ and time.monotonic() < deadline:
            time.sleep(interval)
            for tid, (sr, task) in list(open_.items()):
                current = self.client.get(ref_of(task)).json() or {}
                status = current.get("status")
                if status != task.get("status"):
                    reason = (current.get("statusReason") or {}).get("text")
                    self.say(f"{ref_of(task)}: {task.get('status')} -> {status}"
                             + (f" ({reason})" if reason else ""))
                    open_[tid] = (sr, current)
                if status == "completed":
                    results[tid] = self.check_outcome(sr, current)
                    del open_[tid]
                elif status in FINAL_BAD:
                    results[tid] = False
                    del open_[tid]
        for tid in open_:
            self.say(f"Task/{tid}: no outcome within {timeout:.0f} s")
        good = sum(results.values())
        self.say(f"{good} of {count} referral(s) came back completed with an outcome")
        return 0 if good == count else 1


def simulate(config: RunConfig, args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if config.actor == "referral-recipient":
        return SimulatedRecipient(config, out).run(args.count, args.mode, args.interval,
                                                   args.timeout, args.listen,
                                                   args.callback_url)
    return SimulatedSource(config, out).run(args.recipient, args.count, args.interval,
                                            args.timeout)
