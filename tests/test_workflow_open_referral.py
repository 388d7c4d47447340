"""Open referrals (fhir_server.workflow.open_referral and its use by task_rules): offered to
several candidate organizations, claimed by the first that accepts, declined one by one, and
rejected when every candidate declined (RULES.md §10)."""

from __future__ import annotations

import copy

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.errors import FhirError
from fhir_server.workflow.canonical import (
    EXT_CANDIDATE,
    EXT_CANDIDATE_DECLINED,
    EXT_MODIFIED_BY,
    STATUS_REASON_SYSTEM,
)
from fhir_server.workflow.open_referral import (
    ALL_DECLINED_CODE,
    candidates,
    close_when_all_declined,
    declined,
    declined_entry,
    is_open,
)
from fhir_server.workflow.write_path import prepare_task_write
from tests.test_workflow_task_rules import REQUESTER, REQUESTER_ORG, SR, check, make_task

A, B, C = "Organization/a", "Organization/b", "Organization/c"
STAFF_A = AccessContext(organization=A, fhir_user="Practitioner/pa")
STAFF_B = AccessContext(organization=B)
STAFF_C = AccessContext(organization=C)
OUTSIDER = AccessContext(organization="Organization/z")
SERVICE_C = "HealthcareService/c-therapy"
PARTIES = {SERVICE_C: C}
PERFORMER = [{"text": "Behavioral health provider"}]


def offer(*refs: str, **extra) -> dict:
    """An open referral Task offered to `refs`."""
    task = make_task("requested", owner=None, performerType=PERFORMER, **extra)
    task["extension"] = [{"url": EXT_CANDIDATE, "valueReference": {"reference": r}}
                         for r in refs]
    return task


def claim(task: dict, org: str) -> dict:
    new = copy.deepcopy(task)
    new.update(status="accepted", owner={"reference": org})
    return new


def decline(task: dict, org: str, text: str = "No capacity this month",
            code: str | None = "no-capacity") -> dict:
    """`task` after `org` declined: its candidate entry gone, a declined entry added."""
    new = copy.deepcopy(task)
    new["extension"] = [e for e in new["extension"]
                        if not (e["url"] == EXT_CANDIDATE
                                and e["valueReference"]["reference"] == org)]
    new["extension"].append(declined_entry(org, text, code))
    return new


def refused(prev, new, ctx, status, **kw) -> FhirError:
    with pytest.raises(FhirError) as info:
        check(prev, new, ctx, **kw)
    assert info.value.status == status, info.value.diagnostics
    return info.value


# -- the representation ------------------------------------------------------------------
def test_reading_the_representation():
    task = decline(offer(A, B, SERVICE_C), B)
    assert candidates(task) == [A, SERVICE_C]
    assert declined(task) == [(B, "No capacity this month")]
    assert is_open(task)
    assert not is_open({**task, "owner": {"reference": A}})
    assert not is_open({**task, "status": "accepted"})
    assert not is_open(make_task("requested", owner=None))  # no candidates: not an offer
    entry = declined_entry(B, "Full", "no-capacity")
    assert entry["extension"][1]["valueCodeableConcept"] == {
        "text": "Full", "coding": [{"system": STATUS_REASON_SYSTEM, "code": "no-capacity"}]}
    assert "coding" not in declined_entry(B, "Full")["extension"][1]["valueCodeableConcept"]


def test_requester_creates_an_open_referral():
    assert check(None, offer(A, B), REQUESTER) is None
    assert check(None, offer(A, SERVICE_C), REQUESTER) is None


@pytest.mark.parametrize(("change", "expression"), [
    (lambda t: t.update(owner={"reference": A}), "Task.owner"),
    (lambda t: t.pop("performerType"), "Task.performerType"),
    (lambda t: t["extension"].append({"url": EXT_CANDIDATE, "valueReference": {
        "reference": "Practitioner/x"}}), "Task.extension[2].value"),
])
def test_malformed_open_referrals_are_refused(change, expression):
    task = offer(A, B)
    change(task)
    err = refused(None, task, REQUESTER, 422)
    assert err.issues[0].expression == [expression]


# -- claiming ------------------------------------------------------------------------------
def test_a_candidate_claims_by_accepting():
    task = offer(A, B)
    assert check(task, claim(task, A), STAFF_A) is None
    assert check(task, claim(task, B), STAFF_B) is None


def test_a_candidate_service_claims_for_its_organization():
    task = offer(A, SERVICE_C)
    assert check(task, claim(task, C), STAFF_C, party_organizations=PARTIES) is None
    refused(task, claim(task, C), STAFF_C, 403)  # without knowing the service's organization


def test_only_candidates_may_claim():
    task = offer(A, B)
    err = refused(task, claim(task, "Organization/z"), OUTSIDER, 403)
    assert "not offered to your organization" in err.diagnostics
    refused(task, claim(task, A), OUTSIDER, 403)  # nor claim for a candidate
    refused(task, claim(task, A), STAFF_B, 403)  # nor one candidate for another


def test_a_claim_changes_nothing_but_owner_and_status():
    task = offer(A, B)
    new = claim(task, A)
    new["priority"] = "stat"
    refused(task, new, STAFF_A, 403)
    new = claim(task, A)
    new["extension"] = new["extension"][:1]  # may not prune the other candidates
    refused(task, new, STAFF_A, 403)


def test_claimed_referral_is_no_longer_open_and_second_claim_fails():
    task = offer(A, B)
    won = claim(task, A)
    assert not is_open(won)
    refused(won, claim(won, B), STAFF_B, 403)  # B's accept after A's: B is not the owner


def test_candidates_change_only_while_open():
    task = offer(A, B)
    assert check(task, offer(A, B, C), REQUESTER) is None  # the requester adds one
    won = claim(task, A)
    err = refused(won, {**won, "extension": won["extension"][:1]}, REQUESTER, 422)
    assert err.issues[0].expression == ["Task.extension"]


# -- declining -------------------------------------------------------------------------------
def test_a_candidate_declines_with_a_reason():
    task = offer(A, B)
    assert check(task, decline(task, B), STAFF_B) is None
    assert check(task, decline(task, B, code=None), STAFF_B) is None


def test_a_decline_needs_a_reason_text():
    task = offer(A, B)
    err = refused(task, decline(task, B, text="  "), STAFF_B, 422)
    assert "Say why" in err.diagnostics


@pytest.mark.parametrize("tamper", [
    lambda t: t["extension"].pop(0),  # removes another candidate (A) as well
    lambda t: t["extension"].append(declined_entry(A, "not us")),  # two declined entries
    lambda t: t["extension"].append({"url": "http://example.org/x", "valueString": "y"}),
])
def test_a_decline_touches_only_its_own_entries(tamper):
    task = offer(A, B)
    new = decline(task, B)
    tamper(new)
    refused(task, new, STAFF_B, 422)


def test_a_decline_must_name_the_decliner():
    task = offer(A, B)
    new = decline(task, B)
    new["extension"][-1] = declined_entry(A, "pretending to be A")
    err = refused(task, new, STAFF_B, 422)
    assert "your own organization" in err.diagnostics


def test_a_decline_changes_nothing_else():
    task = offer(A, B)
    new = decline(task, B)
    new["priority"] = "stat"
    refused(task, new, STAFF_B, 403)
    refused(task, decline(task, B), OUTSIDER, 403)  # and only candidates decline


def test_a_service_candidate_declines_for_its_organization():
    task = offer(A, SERVICE_C)
    assert check(task, decline(task, SERVICE_C), STAFF_C, party_organizations=PARTIES) is None
    new = decline(task, SERVICE_C)
    new["extension"][-1] = declined_entry(C, "Full")  # naming the organization itself
    assert check(task, new, STAFF_C, party_organizations=PARTIES) is None


def test_decline_of_a_claimed_referral_is_refused():
    won = claim(offer(A, B), A)
    refused(won, decline(won, B), STAFF_B, 403)


# -- every candidate declined ----------------------------------------------------------------
def test_last_decline_rejects_the_referral():
    task = decline(offer(A, B), A, "Not in our area", "out-of-area")
    assert close_when_all_declined(offer(A, B), task) is task  # B is still a candidate
    last = decline(task, B)
    closed = close_when_all_declined(task, last)
    assert closed["status"] == "rejected"
    assert closed["statusReason"]["coding"] == [
        {"system": STATUS_REASON_SYSTEM, "code": ALL_DECLINED_CODE}]
    text = closed["statusReason"]["text"]
    assert "Organization/a: Not in our area" in text and "Organization/b: No capacity" in text
    assert last["status"] == "requested"  # the input is not changed


def test_all_declined_through_the_write_path_is_stored_rejected():
    task = decline(offer(A, B), A)
    stored = prepare_task_write(task, decline(task, B), STAFF_B, focus_service_request=SR,
                                output_targets={})
    assert stored["status"] == "rejected"
    assert candidates(stored) == [] and [r for r, _ in declined(stored)] == [A, B]
    author = [e for e in stored["meta"]["extension"] if e["url"] == EXT_MODIFIED_BY]
    assert author[0]["valueReference"]["reference"] == B


def test_requester_emptying_the_candidates_does_not_reject():
    """Only a decline closes the referral; a requester editing the list keeps it requested
    (a requested Task without owner or candidates is simply not offered to anybody)."""
    task = offer(A)
    stored = prepare_task_write(task, {**task, "extension": []}, REQUESTER,
                                focus_service_request=SR, output_targets={})
    assert stored["status"] == "requested"
    assert close_when_all_declined(task, {**task, "extension": []})["status"] == "requested"


def test_privileged_writes_follow_the_same_content_rules():
    task = offer(A, B)
    refused(None, {**task, "owner": {"reference": REQUESTER_ORG}}, SYSTEM, 422)
    assert check(task, claim(task, A), SYSTEM) is None


def test_declined_entries_carry_no_other_sub_extensions():
    entry = declined_entry(B, "Full", "no-capacity")
    assert [p["url"] for p in entry["extension"]] == ["candidate", "reason"]
    assert entry["url"] == EXT_CANDIDATE_DECLINED


def test_timeline_shows_each_decline_with_its_reason():
    from fhir_server.workflow.timeline import build_timeline

    first = offer(A, B)
    second = decline(first, A, "Not in our area")
    second["meta"] = {"versionId": "2", "lastUpdated": "2026-01-02T10:00:00Z"}
    third = close_when_all_declined(second, decline(second, B))
    third["meta"] = {"versionId": "3", "lastUpdated": "2026-01-03T10:00:00Z"}
    events = [{p["name"]: next(v for k, v in p.items() if k.startswith("value"))
               for p in e["part"]}
              for e in build_timeline([third, first, second])["parameter"]
              if e["name"] == "event"]
    assert [(e["kind"], e.get("status"), e.get("candidate"), e.get("statusReason"))
            for e in events] == [
        ("status", "requested", None, None),
        ("declined", "requested", {"reference": A}, "Not in our area"),
        ("declined", "rejected", {"reference": B}, "No capacity this month"),
        ("status", "rejected", None, third["statusReason"]["text"])]


def test_status_reasons_are_published_valid_fhir():
    from fhir.resources.R4B.codesystem import CodeSystem
    from fhir.resources.R4B.valueset import ValueSet

    from fhir_server.workflow.artifacts import code_systems, status_reasons

    published = {r["url"]: r for r in code_systems()}
    system = published[STATUS_REASON_SYSTEM]
    CodeSystem.model_validate(system)
    ValueSet.model_validate(published[system["valueSet"]])
    assert system["count"] == len(system["concept"])
    rejected = dict(status_reasons("rejected"))
    assert "no-capacity" in rejected and ALL_DECLINED_CODE not in rejected
    assert list(rejected)[-1] == "other"
    assert {c for c, _ in status_reasons("failed")} >= {"patient-unreachable", "other"}
    assert {c for c, _ in status_reasons("on-hold")} >= {"waiting-for-patient", "other"}
