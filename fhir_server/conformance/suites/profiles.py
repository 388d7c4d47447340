"""Profiles: every resource the server returned during the run (reads, searches, includes,
create responses) is checked against the profile the IG gives its type, by the kit's
built-in checker and, when the server offers it, by the server's own `$validate`."""

from __future__ import annotations

import json
from typing import Any

from fhir_server.conformance import checker
from fhir_server.conformance.context import TestContext
from fhir_server.conformance.http import ref_of
from fhir_server.conformance.model import Requirement, TestCase
from fhir_server.conformance.requirements import actor_spec, ig
from fhir_server.conformance.resources import PROFILE

GROUP = "profiles"
MAX_VALIDATE = 3  # $validate calls per type (the built-in checker sees every instance)


def returned(t: TestContext, res_type: str) -> list[dict[str, Any]]:
    """Distinct instances of `res_type` the server returned so far (identical bodies once:
    the same version answered differently by a read and a search is checked both ways)."""
    seen: dict[str, dict[str, Any]] = {}
    for res in t.session.returned:
        if res.get("resourceType") == res_type:
            seen.setdefault(json.dumps(res, sort_keys=True), res)
    return list(seen.values())


def _read_own(t: TestContext, res_type: str) -> None:
    """Read the kit's own instance of `res_type` (so what the server holds is checked, not
    only what it answered to writes)."""
    s = t.data
    if res_type in ("Task", "ServiceRequest"):
        sr, task = s.referral()
        s.read("source", ref_of(task) if res_type == "Task" else ref_of(sr))
    elif res_type == "Procedure":
        s.read("recipient", ref_of(s.completed()[2]))
    elif res_type == "Consent":
        s.read("source", ref_of(s.consent()))
    elif res_type == "Patient":
        s.read("source", ref_of(s.patient()))
    elif res_type == "Organization":
        s.read("source", s.orgs()["source"])


def _is_referral_task(task: dict[str, Any]) -> bool:
    profiles = (task.get("meta") or {}).get("profile") or []
    return PROFILE["Task"] in profiles or any(
        c.get("code") == "fulfill" for c in (task.get("code") or {}).get("coding") or [])


def _validate_remote(t: TestContext, res: dict[str, Any], profile: str) -> list[str]:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": res}, {"name": "profile", "valueUri": profile}]}
    resp = t.client().post(f"{res['resourceType']}/$validate", body)
    outcome = resp.json() or {}
    if outcome.get("resourceType") != "OperationOutcome":
        return [f"$validate answered HTTP {resp.status} without an OperationOutcome"]
    return [str(i.get("diagnostics") or i.get("code")) for i in outcome.get("issue") or []
            if i.get("severity") in ("error", "fatal")]


def _profile_test(res_type: str) -> Any:
    def run(t: TestContext) -> None:
        _read_own(t, res_type)
        instances = returned(t, res_type)
        if res_type == "Task":
            instances = [x for x in instances if _is_referral_task(x)]
        t.require(instances, f"the server returned no {res_type} during the run")
        profile = PROFILE[res_type]
        remote = "validate" in t.session.server_operations(res_type)
        calls = 0
        # $validate one instance per distinct status first (most variety for the calls)
        firsts = {str(x.get("status")): id(x) for x in reversed(instances)}
        instances.sort(key=lambda x: id(x) not in firsts.values())
        for res in instances:
            label = f"{ref_of(res)} (version {(res.get('meta') or {}).get('versionId')})"
            for path, message in checker.check(res):
                t.check(False, f"{label}: {path}: {message}")
            if remote and calls < MAX_VALIDATE:
                calls += 1
                for message in _validate_remote(t, res, profile):
                    t.check(False, f"{label}: the server's $validate: {message}")
        t.note(f"{len(instances)} {res_type} instance(s) checked by the built-in checker"
               + (f"; {calls} also by the server's $validate against {profile}" if remote
                  else "; the server offers no $validate"))
    return run


def tests(actor: str) -> list[TestCase]:
    cs = actor_spec(actor)
    out = []
    for res_type, profile in PROFILE.items():
        if res_type not in checker.CHECKS or cs.resource(res_type) is None:
            continue
        reqs: tuple[Requirement, ...] = (cs.requirement(res_type, "profile", profile),
                                         ig("conf-5"))
        out.append(TestCase(f"profiles.{res_type}", f"Every {res_type} returned conforms to "
                            f"{profile.rsplit('/', 1)[-1]}", GROUP, "SHALL", reqs,
                            _profile_test(res_type)))
    return out
