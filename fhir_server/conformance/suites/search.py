"""Search: each search parameter the actor's CapabilityStatement names is tried on data the
kit created. A positive query (the right value) must return the target; a negative query
(a different value, same `_id`) must not: a server that ignores the parameter fails."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fhir_server.conformance import resources as fx
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import Response, bundle_resources, ref_of
from fhir_server.conformance.model import LEVELS, Requirement, TestCase
from fhir_server.conformance.requirements import ActorSpec, actor_spec, ig, spec
from fhir_server.conformance.scenario import Scenario

GROUP = "search"
Target = tuple[str, dict[str, Any]]  # (role that searches, the resource to find)


def _missing(res_type: str) -> str:
    return f"{res_type}/kit-missing-{uuid.uuid4().hex[:8]}"


def _day_before(instant: str) -> str:
    parsed = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    return (parsed - timedelta(days=1)).strftime("%Y-%m-%d")


@dataclass(frozen=True)
class Case:
    """How to test one parameter: the target and its (positive, negative) values."""

    target: Callable[[Scenario], Target]
    values: Callable[[Scenario, dict[str, Any]], tuple[str, str]]


def _referral_task(s: Scenario) -> Target:
    return "source", s.referral()[1]


def _completed_task(s: Scenario) -> Target:
    return "source", s.completed()[1]


def _referral_sr(s: Scenario) -> Target:
    return "source", s.referral()[0]


def _procedure(s: Scenario) -> Target:
    return "recipient", s.completed()[2]


def _updated(_s: Scenario, r: dict[str, Any]) -> tuple[str, str]:
    return f"ge{_day_before(r['meta']['lastUpdated'])}", "lt2000-01-01"


def _org(role: str) -> Callable[[Scenario, dict[str, Any]], tuple[str, str]]:
    return lambda s, _r: (s.orgs()[role], s.orgs()["other"] if role != "other"
                          else s.orgs()["source"])


CASES: dict[tuple[str, str], Case] = {
    ("Task", "code"): Case(_referral_task, lambda s, r: (f"{fx.TASK_CODE}|fulfill",
                                                         f"{fx.TASK_CODE}|approve")),
    ("Task", "patient"): Case(_referral_task, lambda s, r: (r["for"]["reference"],
                                                            _missing("Patient"))),
    ("Task", "requester"): Case(_referral_task, _org("source")),
    ("Task", "owner"): Case(_referral_task, _org("recipient")),
    ("Task", "status"): Case(_referral_task, lambda s, r: ("requested", "cancelled")),
    ("Task", "focus"): Case(_referral_task, lambda s, r: (r["focus"]["reference"],
                                                          _missing("ServiceRequest"))),
    ("Task", "output"): Case(_completed_task, lambda s, r: (
        r["output"][0]["valueReference"]["reference"], _missing("Procedure"))),
    ("Task", "_lastUpdated"): Case(_referral_task, _updated),
    ("ServiceRequest", "category"): Case(_referral_sr, lambda s, r: (
        f"{fx.TEMP_CODES}|stress", f"{fx.TEMP_CODES}|food-insecurity")),
    ("ServiceRequest", "code"): Case(_referral_sr, lambda s, r: (
        f"{fx.SNOMED}|{fx.SERVICE_CODE['code']}", f"{fx.SNOMED}|7000000")),
    ("ServiceRequest", "intent"): Case(_referral_sr, lambda s, r: ("order", "plan")),
    ("ServiceRequest", "occurrence"): Case(_referral_sr, lambda s, r: (
        f"ge{_day_before(r['authoredOn'])}", "lt2000-01-01")),
    ("ServiceRequest", "patient"): Case(_referral_sr, lambda s, r: (
        r["subject"]["reference"], _missing("Patient"))),
    ("ServiceRequest", "performer"): Case(_referral_sr, _org("recipient")),
    ("ServiceRequest", "requester"): Case(_referral_sr, _org("source")),
    ("ServiceRequest", "status"): Case(_referral_sr, lambda s, r: ("active", "revoked")),
    ("ServiceRequest", "supporting-info"): Case(_referral_sr, lambda s, r: (
        r["supportingInfo"][0]["reference"], _missing("Consent"))),
    ("ServiceRequest", "_lastUpdated"): Case(_referral_sr, _updated),
    ("Procedure", "based-on"): Case(_procedure, lambda s, r: (
        r["basedOn"][0]["reference"], _missing("ServiceRequest"))),
    ("Procedure", "category"): Case(_procedure, lambda s, r: (
        f"{fx.TEMP_CODES}|stress", f"{fx.TEMP_CODES}|food-insecurity")),
    ("Procedure", "code"): Case(_procedure, lambda s, r: (
        f"{fx.SNOMED}|{fx.PROCEDURE_CODE['code']}", f"{fx.SNOMED}|7000000")),
    ("Procedure", "date"): Case(_procedure, lambda s, r: (
        f"ge{_day_before(r['performedDateTime'])}", "lt2000-01-01")),
    ("Procedure", "patient"): Case(_procedure, lambda s, r: (
        r["subject"]["reference"], _missing("Patient"))),
    ("Procedure", "performer"): Case(_procedure, _org("recipient")),
    ("Procedure", "status"): Case(_procedure, lambda s, r: ("completed", "not-done")),
    ("Procedure", "_lastUpdated"): Case(_procedure, _updated),
    ("Consent", "source-reference"): Case(lambda s: ("source", s.consent()), lambda s, r: (
        r["sourceReference"]["reference"], _missing("DocumentReference"))),
    ("Consent", "_lastUpdated"): Case(lambda s: ("source", s.consent()), _updated),
    ("Patient", "_lastUpdated"): Case(lambda s: ("source", s.patient()), _updated),
    ("DocumentReference", "_lastUpdated"): Case(lambda s: ("source", s.document()), _updated),
}

# The resource `_id` searches use, per type (a second one shows the comma-separated form).
ID_TARGETS: dict[str, Callable[[Scenario], tuple[str, list[dict[str, Any]]]]] = {
    "Task": lambda s: ("source", [s.referral()[1], s.completed()[1]]),
    "ServiceRequest": lambda s: ("source", [s.referral()[0], s.completed()[0]]),
    "Procedure": lambda s: ("recipient", [s.completed()[2]]),
    "Consent": lambda s: ("source", [s.consent()]),
    "Patient": lambda s: ("source", [s.patient()]),
    "DocumentReference": lambda s: ("source", [s.document()]),
    "Organization": lambda s: ("source", [s.read("source", s.orgs()["source"]),
                                          s.read("source", s.orgs()["recipient"])]),
}

# _include: (type, include) -> (target, reference path in the target)
INCLUDES: dict[tuple[str, str], tuple[Callable[[Scenario], Target], Callable[[dict], str]]] = {
    ("Task", "Task:focus"): (_referral_task, lambda r: r["focus"]["reference"]),
    ("Task", "Task:output"): (_completed_task,
                              lambda r: r["output"][0]["valueReference"]["reference"]),
    ("ServiceRequest", "ServiceRequest:supporting-info"): (
        _referral_sr, lambda r: r["supportingInfo"][0]["reference"]),
    ("ServiceRequest", "ServiceRequest:patient"): (_referral_sr,
                                                   lambda r: r["subject"]["reference"]),
    ("ServiceRequest", "ServiceRequest:requester"): (_referral_sr,
                                                     lambda r: r["requester"]["reference"]),
    ("ServiceRequest", "ServiceRequest:performer"): (
        _referral_sr, lambda r: r["performer"][0]["reference"]),
    ("Consent", "Consent:source-reference:DocumentReference"): (
        lambda s: ("source", s.consent()), lambda r: r["sourceReference"]["reference"]),
}


def search(t: TestContext, role: str, res_type: str,
           params: dict[str, str]) -> tuple[set[str], set[str], Response]:
    """Run a search; (ids matched, Type/id included, response). Checks it is a searchset."""
    resp = t.client(role).get(res_type, params=params)
    body = resp.json()
    shown = "&".join(f"{k}={v}" for k, v in params.items())
    t.require(resp.status == 200 and isinstance(body, dict) and
              body.get("resourceType") == "Bundle",
              f"{res_type}?{shown}: HTTP {resp.status}, expected a searchset Bundle")
    t.check(body.get("type") == "searchset", f"{res_type}?{shown}: Bundle.type is "
                                             f"{body.get('type')!r}")
    matched = {r.get("id") for r in bundle_resources(body) if r.get("resourceType") == res_type}
    included = {ref_of(r) for r in bundle_resources(body, "include")}
    return matched, included, resp


def _param_test(res_type: str, name: str, case: Case) -> Callable[[TestContext], None]:
    def run(t: TestContext) -> None:
        role, target = case.target(t.data)
        positive, negative = case.values(t.data, target)
        rid = target["id"]
        found, _inc, _ = search(t, role, res_type, {name: positive, "_id": rid})
        t.check(rid in found, f"{res_type}?{name}={positive}&_id={rid} did not return "
                              f"{res_type}/{rid}")
        found, _inc, _ = search(t, role, res_type, {name: negative, "_id": rid})
        t.check(rid not in found, f"{res_type}?{name}={negative}&_id={rid} returned "
                                  f"{res_type}/{rid}: the parameter {name} was ignored")
    return run


def _id_test(res_type: str) -> Callable[[TestContext], None]:
    def run(t: TestContext) -> None:
        role, targets = ID_TARGETS[res_type](t.data)
        first = targets[0]["id"]
        found, _inc, _ = search(t, role, res_type, {"_id": first})
        t.check(found == {first}, f"{res_type}?_id={first} returned {sorted(found)}")
        if len(targets) > 1:
            ids = [r["id"] for r in targets]
            found, _inc, _ = search(t, role, res_type, {"_id": ",".join(ids)})
            t.check(found == set(ids), f"{res_type}?_id={','.join(ids)} returned "
                                       f"{sorted(found)} (polling several ids in one call)")
        missing = _missing(res_type).split("/", 1)[1]
        found, _inc, _ = search(t, role, res_type, {"_id": missing})
        t.check(not found, f"{res_type}?_id={missing} (no such id) returned {sorted(found)}")
    return run


def _include_test(res_type: str, include: str) -> Callable[[TestContext], None]:
    target_of, path = INCLUDES[(res_type, include)]

    def run(t: TestContext) -> None:
        role, target = target_of(t.data)
        expected = path(target)
        found, included, _ = search(t, role, res_type, {"_id": target["id"],
                                                        "_include": include})
        t.require(target["id"] in found, f"{res_type}?_id={target['id']}&_include={include} "
                                         "did not return the target")
        t.check(expected in included, f"{res_type}?_id={target['id']}&_include={include} did "
                                      f"not include {expected} (search.mode=include)")
    return run


def _endpoints(spec_: ActorSpec, types: list[str]) -> Callable[[TestContext], None]:
    def run(t: TestContext) -> None:
        for res_type in types:
            level = spec_.resource(res_type).level_of("interaction", "search-type")  # type: ignore[union-attr]
            resp = t.client().get(res_type, params={"_id": _missing(res_type).split("/")[1]})
            body = resp.json()
            ok = resp.status == 200 and isinstance(body, dict) and \
                body.get("resourceType") == "Bundle" and not bundle_resources(body)
            t.check(ok, f"{res_type}?_id=<no such id>: HTTP {resp.status}, expected an empty "
                        f"searchset ({level})", level)
    return run


def _best(levels: list[str]) -> str:
    return next((lv for lv in LEVELS if lv in levels), "MAY")


def tests(actor: str) -> list[TestCase]:
    spec_ = actor_spec(actor)
    search_rule = spec("fhir-search-id")
    out: list[TestCase] = []
    smoke: list[str] = []
    for rspec in spec_.resources:
        rt = rspec.type
        search_level = rspec.level_of("interaction", "search-type")
        if search_level is None:
            continue
        tested = False
        for item in rspec.of("searchParam"):
            req = spec_.requirement(rt, "searchParam", item.value)
            if item.value == "_id" and rt in ID_TARGETS:
                out.append(TestCase(f"search.{rt}._id", f"{rt}?_id (one id, several ids)",
                                    GROUP, item.level, (req, search_rule), _id_test(rt)))
                tested = True
            elif (rt, item.value) in CASES:
                out.append(TestCase(f"search.{rt}.{item.value}",
                                    f"{rt}?{item.value} returns the right {rt}", GROUP,
                                    item.level, (req, search_rule),
                                    _param_test(rt, item.value, CASES[(rt, item.value)])))
                tested = True
        for item in rspec.of("include"):
            key = (rt, item.value.replace("HealthCareService", "HealthcareService"))
            if key in INCLUDES:
                reqs: tuple[Requirement, ...] = (spec_.requirement(rt, "include", item.value),)
                if key == ("Task", "Task:focus"):
                    reqs += (ig("task-7"),)
                out.append(TestCase(f"search.{rt}.include.{item.value.split(':', 1)[1]}",
                                    f"{rt}?_include={item.value} includes the referenced "
                                    "resource", GROUP, item.level, reqs,
                                    _include_test(rt, key[1])))
        if not tested:
            smoke.append(rt)
    if smoke:
        levels = [spec_.resource(rt).level_of("interaction", "search-type") or "MAY"  # type: ignore[union-attr]
                  for rt in smoke]
        out.append(TestCase(
            "search.endpoints", f"Search answers for {', '.join(smoke)} (no kit data: an "
            "empty searchset for an unknown _id)", GROUP, _best(levels),
            tuple(spec_.requirement(rt, "interaction", "search-type") for rt in smoke),
            _endpoints(spec_, smoke)))
    return out
