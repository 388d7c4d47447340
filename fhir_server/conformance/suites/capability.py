"""CapabilityStatement: FHIR version, formats, and every resource, interaction, search
parameter, include, profile and operation the actor's CapabilityStatement expects."""

from __future__ import annotations

from typing import Any

from fhir_server.conformance.context import TestContext
from fhir_server.conformance.model import Requirement, TestCase
from fhir_server.conformance.requirements import ActorSpec, actor_spec, ig

GROUP = "capability"


def _canonical(url: str) -> str:
    return url.split("|", 1)[0]


def include_matches(expected: str, declared: list[str], res_type: str) -> bool:
    """`Type:param[:Target]` is covered by the same include, the untyped `Type:param` or
    `Type:*` (the resource type is compared loosely: the IG writes HealthCareService)."""
    parts = expected.split(":")
    param, target = parts[1], (parts[2] if len(parts) > 2 else "")
    for item in declared:
        got = item.split(":")
        if len(got) < 2 or got[0].lower() != res_type.lower():
            continue
        if got[1] == "*" or (got[1] == param and (len(got) == 2 or got[2] == target)):
            return True
    return False


def check_resource(t: TestContext, spec: ActorSpec, res_type: str) -> None:
    cap = t.need_capability()
    rspec = spec.resource(res_type)
    assert rspec is not None
    declared = t.session.server_resource(res_type)
    t.require(declared is not None, f"{res_type} is not in the CapabilityStatement "
                                    f"({rspec.level})", rspec.level)
    assert declared is not None
    interactions = {i.get("code") for i in declared.get("interaction") or []}
    params = {p.get("name") for p in declared.get("searchParam") or []}
    profiles = {_canonical(p) for p in declared.get("supportedProfile") or []}
    if declared.get("profile"):
        profiles.add(_canonical(declared["profile"]))
    includes = list(declared.get("searchInclude") or [])
    operations = {o.get("name", "").lstrip("$") for o in declared.get("operation") or []}
    for item in rspec.items:
        if item.kind == "interaction":
            t.check(item.value in interactions,
                    f"{res_type}: interaction {item.value} ({item.level}) is not declared",
                    item.level)
        elif item.kind == "searchParam":
            t.check(item.value in params,
                    f"{res_type}: search parameter {item.value} ({item.level}) is not declared",
                    item.level)
        elif item.kind == "include":
            t.check(include_matches(item.value, includes, res_type),
                    f"{res_type}: _include={item.value} ({item.level}) is not declared",
                    item.level)
        elif item.kind == "profile":
            t.check(_canonical(item.value) in profiles,
                    f"{res_type}: profile {item.value} ({item.level}) is not in "
                    "supportedProfile", item.level)
        elif item.kind == "operation":
            t.check(item.value in operations,
                    f"{res_type}: operation ${item.value} ({item.level}) is not declared",
                    item.level)
    del cap


def _fetch(t: TestContext) -> None:
    cap = t.need_capability()
    t.require(cap.get("resourceType") == "CapabilityStatement",
              "GET [base]/metadata did not return a CapabilityStatement")
    t.check(cap.get("kind") in ("instance", "capability"),
            f"CapabilityStatement.kind is {cap.get('kind')!r}; a server describes itself as "
            "'instance' (or 'capability')", "SHOULD")
    modes = [r.get("mode") for r in cap.get("rest") or []]
    t.require("server" in modes, "the CapabilityStatement has no rest entry with mode=server")


def _version(t: TestContext) -> None:
    cap = t.need_capability()
    version = str(cap.get("fhirVersion", ""))
    t.check(version.startswith("4.0."), f"fhirVersion is {version!r}; the IG is FHIR 4.0.1")


def _formats(t: TestContext) -> None:
    cap = t.need_capability()
    formats = {str(f).split(";")[0].strip() for f in cap.get("format") or []}
    t.check(formats & {"json", "application/fhir+json"},
            f"CapabilityStatement.format {sorted(formats)} does not list JSON")
    t.check(formats & {"xml", "application/fhir+xml"},
            f"CapabilityStatement.format {sorted(formats)} does not list XML")


def _system(spec: ActorSpec) -> Any:
    def run(t: TestContext) -> None:
        cap = t.need_capability()
        declared = {i.get("code") for r in cap.get("rest") or []
                    for i in r.get("interaction") or []}
        for item in spec.system_interactions:
            t.check(item.value in declared, f"system interaction {item.value} ({item.level}) "
                                            "is not declared", item.level)
    return run


def _instantiates(spec: ActorSpec) -> Any:
    def run(t: TestContext) -> None:
        cap = t.need_capability()
        t.check(spec.canonical in [_canonical(u) for u in cap.get("instantiates") or []],
                f"CapabilityStatement.instantiates does not name {spec.canonical}")
    return run


def tests(actor: str) -> list[TestCase]:
    spec = actor_spec(actor)
    cs = Requirement(f"CS {spec.canonical.rsplit('/', 1)[-1]}", "SHALL",
                     "The server publishes a CapabilityStatement for the actor's server side.",
                     spec.canonical)
    out = [
        TestCase("cap.fetch", "GET [base]/metadata returns a server CapabilityStatement", GROUP,
                 "SHALL", (cs,), _fetch),
        TestCase("cap.fhir-version", "CapabilityStatement.fhirVersion is 4.0.x", GROUP, "SHALL",
                 (Requirement("CS fhirVersion", "SHALL", "The IG's actors are FHIR 4.0.1.",
                              spec.canonical),), _version),
        TestCase("cap.formats", "CapabilityStatement.format lists JSON and XML", GROUP, "SHALL",
                 (ig("task-5"),), _formats),
    ]
    for rspec in spec.resources:
        out.append(TestCase(
            f"cap.resource.{rspec.type}",
            f"{rspec.type}: interactions, search parameters, includes and profiles declared",
            GROUP, rspec.level, (spec.requirement(rspec.type, "resource"),),
            lambda t, rt=rspec.type: check_resource(t, spec, rt)))
    levels = {i.level for i in spec.system_interactions}
    out.append(TestCase("cap.system-interactions", "System interactions (batch) declared",
                        GROUP, "SHALL" if "SHALL" in levels else "SHOULD",
                        (Requirement(f"CS {spec.canonical.rsplit('/', 1)[-1]}: rest.interaction",
                                     "SHOULD", "batch lets partners poll several types at "
                                     "once", spec.canonical),), _system(spec)))
    out.append(TestCase("cap.instantiates", "CapabilityStatement.instantiates names the actor",
                        GROUP, "MAY",
                        (Requirement("CS instantiates", "MAY", "A server may declare which IG "
                                     "CapabilityStatement it implements.", spec.canonical),),
                        _instantiates(spec)))
    return out
