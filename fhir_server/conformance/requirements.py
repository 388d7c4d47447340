"""The requirements the kit checks: the IG's conformance statements (by key), the actor
CapabilityStatements' expectations, and the rules of the specifications the IG builds on."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.conformance.model import Requirement

DATA = Path(__file__).resolve().parent / "data"
IG = "http://hl7.org/fhir/us/sdoh-clinicalcare"
EXPECTATION = "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation"

ACTORS = {
    "referral-source": "SDOHCC-ReferralSource",
    "coordination-platform": "SDOHCC-CoordinationPlatform",
    "referral-recipient": "SDOHCC-ReferralRecipient",
}

# Rules from the specifications the IG depends on, in our words, with where they are stated.
SPEC_RULES: dict[str, tuple[str, str, str]] = {
    "backport-handshake": (
        "SHALL",
        "A rest-hook Subscription starts as 'requested'; the server sends a handshake "
        "notification (history Bundle whose SubscriptionStatus says type=handshake, "
        "status=requested) and sets the Subscription 'active' once it was accepted.",
        "Subscriptions R5 Backport 1.1.0, channels (rest-hook) and workflow"),
    "backport-notification": (
        "SHALL",
        "Every notification is a history Bundle whose first entry is the SubscriptionStatus "
        "(Parameters in R4) with subscription, topic, status, type and "
        "events-since-subscription-start; event notifications add notification-event with "
        "event-number and focus.",
        "Subscriptions R5 Backport 1.1.0, notifications (R4 representation)"),
    "backport-id-only": (
        "SHALL",
        "An id-only notification carries the focus reference (entry fullUrl and request) and "
        "no resource body.",
        "Subscriptions R5 Backport 1.1.0, payload types"),
    "backport-full-resource": (
        "MAY",
        "A full-resource notification carries the focus resource in its entry.",
        "Subscriptions R5 Backport 1.1.0, payload types"),
    "backport-topic-discovery": (
        "SHOULD",
        "The server advertises the topics it supports in its CapabilityStatement "
        "(capabilitystatement-subscriptiontopic-canonical on the Subscription resource).",
        "Subscriptions R5 Backport 1.1.0, topic discovery (R4)"),
    "fhir-versioned-update": (
        "SHALL",
        "With versioning = versioned-update, an update whose If-Match names a stale version "
        "is refused with 412 Precondition Failed.",
        "FHIR R4 http.html#concurrency; IG CapabilityStatement Task.versioning"),
    "fhir-search-id": (
        "SHALL",
        "A search returns the resources matching every parameter given; _id with a "
        "comma-separated list matches any of the ids.",
        "FHIR R4 search.html"),
    "fhir-errors": (
        "SHALL",
        "A refused request answers with a 4xx status and an OperationOutcome.",
        "FHIR R4 http.html (status codes, OperationOutcome)"),
    "fhir-formats": (
        "SHALL",
        "The server honours Accept and _format for application/fhir+json and "
        "application/fhir+xml.",
        "FHIR R4 http.html#mime-type"),
    "smart-discovery": (
        "SHALL",
        "A server whose CapabilityStatement claims SMART-on-FHIR security serves "
        "[base]/.well-known/smart-configuration with its token endpoint.",
        "SMART App Launch 2.x, conformance; SMART Backend Services"),
    "smart-bearer": (
        "SHALL",
        "A request without a valid access token is refused with 401.",
        "SMART App Launch 2.x / RFC 6750; IG privacy and security (priv-1, priv-2)"),
    "task-update-permissions": (
        "SHALL",
        "Servers SHALL enforce permissions on Task updates: only the Task's author may change "
        "everything; the assigned owner may change status, statusReason and output; anybody "
        "else may change nothing.",
        "IG CapabilityStatements, Task update documentation"),
    "task-state-machine": (
        "SHOULD",
        "The referral Task follows the IG's state diagram: requested -> accepted | rejected | "
        "cancelled; accepted -> in-progress | on-hold | cancelled | completed | failed; "
        "in-progress and on-hold -> each other, cancelled, completed, failed; rejected, "
        "cancelled, failed and completed are final (entered-in-error aside).",
        "IG SDOHCC Task For Referral Management, state diagram (guidance)"),
    "task-status-binding": (
        "SHALL",
        "Task.status of a referral Task is bound (required) to SDOHCC ValueSet Referral Task "
        "Status, which excludes 'received' and 'ready'.",
        "IG SDOHCC Task For Referral Management profile"),
    "task-owner-open": (
        "MAY",
        "Task.owner is 0..1 on purpose: an 'open' requested Task can be claimed by a "
        "performer.",
        "IG SDOHCC Task For Referral Management profile"),
}


# The IG statements no test of the kit checks, by topic, with the reason (shown in the HTML
# and JSON reports and the README; tests keep it equal to what the suites do not cover).
NOT_TESTED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Domain terminology",
     ("serv-1", "serv-2", "proc-1", "proc-2", "cond-1", "cond-2", "cond-3", "cond-4", "cond-5",
      "goal-1", "goal-2", "obsscreen-1", "obsscreen-2", "obsscreen-3"),
     "The Gravity value sets live in VSAC behind a UMLS licence, not in the IG package; the "
     "kit checks only the SDOHCC category codes."),
    ("Screening and personal characteristics", ("assess-1", "assess-2", "char-1", "char-2"),
     "The kit creates no Observations."),
    ("Capacity", ("cap-1",),
     "The HealthcareService for Referral Management profile is draft; not queried."),
    ("Must Support duties of applications",
     ("conf-1", "conf-2", "conf-3", "conf-4", "conf-6", "conf-7", "conf-8", "conf-9"),
     "What a sending or receiving application populates, displays and tolerates is not "
     "visible over the REST API (conf-5 is shown by the profile tests)."),
    ("Policy and law", ("priv-3", "priv-4", "priv-5", "priv-6", "priv-7", "priv-10"),
     "Not observable by a client."),
    ("Client behaviour", ("refer-3", "refer-4", "serv-3", "task-11", "task-12", "conn-1"),
     "Polling frequency, batching and what a partner puts in its requests are the client's "
     "duty, not the server's."),
    ("SMS and out-of-band notification", ("task-1", "task-3", "task-8", "task-9", "task-10"),
     "Optional, and the kit receives no SMS or e-mail (it checks only that an e-mail channel "
     "Subscription is accepted)."),
)


def not_tested() -> list[dict[str, Any]]:
    """NOT_TESTED with each statement's level and text, for the reports."""
    return [{"topic": topic, "reason": why,
             "statements": [{"key": k, "conformance": statements()[k]["conformance"],
                             "text": statements()[k]["text"]} for k in keys]}
            for topic, keys, why in NOT_TESTED]


@lru_cache(maxsize=1)
def statements() -> dict[str, dict[str, Any]]:
    """IG statement key -> {key, conformance, label, text}."""
    data = json.loads((DATA / "requirements.json").read_text())
    return {s["key"]: s for s in data["statements"]}


def ig(key: str, level: str | None = None) -> Requirement:
    """The IG conformance statement `key` as a Requirement."""
    st = statements()[key]
    verbs = st["conformance"] or ["SHALL"]
    chosen = level or ("SHALL" if "SHALL" in verbs else verbs[0].replace("-NOT", ""))
    return Requirement(key, chosen, st["text"], f"{IG} (Requirements fromNarrative)")


def spec(key: str) -> Requirement:
    level, text, source = SPEC_RULES[key]
    return Requirement(key, level, text, source)


@dataclass(frozen=True)
class Item:
    """One expected capability: a profile, interaction, search parameter, include or
    operation, with its expectation."""

    kind: str
    value: str
    level: str
    extra: str = ""  # search parameter type / operation definition


@dataclass(frozen=True)
class ResourceSpec:
    type: str
    level: str
    items: tuple[Item, ...]
    documentation: dict[str, str]  # interaction code -> documentation

    def of(self, kind: str) -> list[Item]:
        return [i for i in self.items if i.kind == kind]

    def level_of(self, kind: str, value: str) -> str | None:
        """The expectation of one item (profiles compared without their |version)."""
        def same(item: Item) -> bool:
            if kind == "profile":
                return item.value.split("|", 1)[0] == value.split("|", 1)[0]
            return item.value == value
        return next((i.level for i in self.items if i.kind == kind and same(i)), None)


@dataclass(frozen=True)
class ActorSpec:
    actor: str
    canonical: str
    formats: tuple[str, ...]
    fhir_version: str
    security_services: tuple[str, ...]
    system_interactions: tuple[Item, ...]
    resources: tuple[ResourceSpec, ...]

    def resource(self, res_type: str) -> ResourceSpec | None:
        return next((r for r in self.resources if r.type == res_type), None)

    def requirement(self, res_type: str, kind: str, value: str = "") -> Requirement:
        """The CapabilityStatement expectation as a Requirement (level MAY when none)."""
        spec_ = self.resource(res_type)
        name = self.canonical.rsplit("/", 1)[-1]
        if spec_ is None:
            return Requirement(f"CS {name}: {res_type}", "MAY", "not in the actor's "
                               "CapabilityStatement", self.canonical)
        level = spec_.level if kind == "resource" else (spec_.level_of(kind, value) or "MAY")
        label = f"{res_type}" if kind == "resource" else f"{res_type}.{kind} {value}"
        text = {
            "resource": f"The server supports {res_type} ({spec_.level}).",
            "interaction": f"The server supports the {value} interaction on {res_type}.",
            "searchParam": f"The server supports searching {res_type} by {value}.",
            "include": f"The server supports _include={value}.",
            "profile": f"The server supports {res_type} conforming to {value}.",
            "operation": f"The server supports ${value} on {res_type}.",
        }[kind]
        return Requirement(f"CS {name}: {label}", level, text, self.canonical)


def _expectation(node: dict[str, Any] | None) -> str:
    for ext in (node or {}).get("extension") or []:
        if ext.get("url") == EXPECTATION:
            return str(ext.get("valueCode"))
    return "MAY"  # no expectation given: optional


@lru_cache(maxsize=8)
def actor_spec(actor: str) -> ActorSpec:
    """The server side of an actor's CapabilityStatement."""
    name = ACTORS[actor]
    with gzip.open(DATA / "capabilitystatements" / f"{name}.json.gz", "rt",
                   encoding="utf-8") as fh:
        cs = json.load(fh)
    rest = next(r for r in cs["rest"] if r["mode"] == "server")
    resources = []
    for res in rest.get("resource", []):
        items: list[Item] = []
        marks = res.get("_supportedProfile") or []
        for i, url in enumerate(res.get("supportedProfile") or []):
            items.append(Item("profile", url, _expectation(marks[i] if i < len(marks)
                                                              else None)))
        marks = res.get("_searchInclude") or []
        for i, inc in enumerate(res.get("searchInclude") or []):
            items.append(Item("include", inc, _expectation(marks[i] if i < len(marks)
                                                              else None)))
        items += [Item("interaction", x["code"], _expectation(x))
                  for x in res.get("interaction") or []]
        items += [Item("searchParam", x["name"], _expectation(x), x.get("type", ""))
                  for x in res.get("searchParam") or []]
        items += [Item("operation", x["name"], _expectation(x), x.get("definition", ""))
                  for x in res.get("operation") or []]
        docs = {x["code"]: x.get("documentation", "") for x in res.get("interaction") or []}
        resources.append(ResourceSpec(res["type"], _expectation(res), tuple(items), docs))
    services = tuple(c.get("code", "") for s in (rest.get("security") or {}).get("service", [])
                     for c in s.get("coding", []))
    system = tuple(Item("interaction", x["code"], _expectation(x))
                   for x in rest.get("interaction") or [])
    return ActorSpec(actor, cs["url"], tuple(cs.get("format", [])), cs["fhirVersion"],
                     services, system, tuple(resources))
