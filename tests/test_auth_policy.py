"""The access policy (pure): interaction checks, search narrowing, the referral compartment
with its consent rule, and the AuditEvent / Provenance builders."""

from __future__ import annotations

import pytest

from fhir_server.auth.audit import build_audit_event, build_provenance
from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.auth.policy import (
    Alternative,
    check_interaction,
    require_admin,
    restrict_for,
    searchable_types,
)
from fhir_server.auth.referral_compartment import (
    CANDIDATE_PATH,
    OfferedTo,
    OrgRef,
    ReferencedBy,
    SubjectOfOwnRecord,
    WrittenBy,
)
from fhir_server.auth.scopes import parse_scopes
from fhir_server.errors import FhirError
from tests.access_model import visible
from tests.live import assert_valid_fhir

OBS_P1 = {"resourceType": "Observation", "id": "o1", "status": "final",
          "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}}
OBS_P2 = {**OBS_P1, "id": "o2", "subject": {"reference": "Patient/p2"}}


def ctx(scope: str, **kw) -> AccessContext:
    return AccessContext(client_id="c", scopes=parse_scopes(scope), **kw)


def status_of(fn, *args) -> int | None:
    try:
        fn(*args)
    except FhirError as exc:
        return exc.status
    return None


def test_system_and_development_contexts_are_unrestricted():
    assert status_of(check_interaction, SYSTEM, "delete", "Task", OBS_P1) is None
    assert restrict_for(SYSTEM, "AuditEvent").unrestricted


def test_no_scope_is_403_with_insufficient_scope():
    with pytest.raises(FhirError) as err:
        check_interaction(ctx("user/Task.r"), "update", "Task")
    assert err.value.status == 403
    assert err.value.headers["WWW-Authenticate"] == 'Bearer error="insufficient_scope"'
    assert "insufficient_scope" in err.value.diagnostics


def test_patient_scope_needs_patient_in_context():
    assert status_of(check_interaction, ctx("patient/*.rs"), "read", "Observation") == 403
    c = ctx("patient/*.rs", patient="p1")
    assert status_of(check_interaction, c, "read", "Observation", OBS_P1) is None
    assert status_of(check_interaction, c, "read", "Observation", OBS_P2) == 404  # no leak


def test_patient_scope_create_for_other_patient_is_403():
    c = ctx("patient/Observation.c", patient="p1")
    assert status_of(check_interaction, c, "create", "Observation", OBS_P1) is None
    assert status_of(check_interaction, c, "create", "Observation", OBS_P2) == 403


def test_update_moving_resource_to_other_patient_is_403():
    c = ctx("patient/Observation.ru", patient="p1")
    assert status_of(check_interaction, c, "update", "Observation", OBS_P1) is None
    with pytest.raises(FhirError) as err:
        check_interaction(c, "update", "Observation", OBS_P2, stored=False)
    assert err.value.status == 403


def test_patient_scope_on_shared_types_is_read_only():
    c = ctx("patient/*.cruds", patient="p1")
    org = {"resourceType": "Organization", "id": "x"}
    assert status_of(check_interaction, c, "read", "Organization", org) is None
    assert status_of(check_interaction, c, "update", "Organization", org) == 404


def test_own_fhir_user_is_readable():
    c = ctx("patient/Observation.rs", patient="p1", fhir_user="Practitioner/9")
    me = {"resourceType": "Practitioner", "id": "9"}
    assert status_of(check_interaction, c, "read", "Practitioner", me) is None
    other = {"resourceType": "Practitioner", "id": "8"}
    assert status_of(check_interaction, c, "read", "Practitioner", other) == 403


def test_granular_scope_on_resource():
    c = ctx("user/Observation.rs?status=final")
    assert status_of(check_interaction, c, "read", "Observation", OBS_P1) is None
    assert status_of(check_interaction, c, "read", "Observation",
                     {**OBS_P1, "status": "amended"}) == 404


def test_restrict_for_scope_alternatives():
    c = ctx("patient/Observation.rs user/Observation.rs?category=survey", patient="p1")
    r = restrict_for(c, "Observation")
    assert r.allowed and r.organization is None
    assert r.alternatives == (
        Alternative((), "p1", ("subject", "performer")),
        Alternative((("category", "survey"),), None, ()),
    )
    assert restrict_for(ctx("user/*.rs"), "Observation").alternatives is None
    assert not restrict_for(ctx("user/Task.rs"), "Observation").allowed


def test_restrict_for_organization_rules():
    c = ctx("system/*.rs", organization="Organization/cbo")
    task = restrict_for(c, "Task")
    assert task.organization == "Organization/cbo"
    assert task.rules == (WrittenBy(), OrgRef("Task.owner"), OrgRef("Task.requester"),
                          OfferedTo(CANDIDATE_PATH))
    assert ReferencedBy("Task", "Task.focus") in restrict_for(c, "ServiceRequest").rules
    assert SubjectOfOwnRecord() in restrict_for(c, "Patient").rules
    assert restrict_for(c, "Subscription").rules == (WrittenBy(),)  # only what it wrote
    assert restrict_for(c, "Organization").shared
    assert not restrict_for(c, "AuditEvent").allowed  # administrators only
    admin = AccessContext(client_id="c", scopes=parse_scopes("user/*.rs"),
                          organization="Organization/cbo", is_admin=True)
    assert restrict_for(admin, "AuditEvent").unrestricted
    assert searchable_types(c, ["Task", "AuditEvent", "Organization"]) == [
        "Task", "Organization"]


def test_require_admin():
    assert status_of(require_admin, ctx("user/*.rs")) == 403
    assert status_of(require_admin, SYSTEM) is None


def _world(consent_status: str | None, consent_author: str = "Organization/ehr"
           ) -> list[tuple[dict, str | None]]:
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active",
          "intent": "order", "subject": {"reference": "Patient/p1"},
          "requester": {"reference": "PractitionerRole/ehr-role"},
          "supportingInfo": [{"reference": "QuestionnaireResponse/qr1"}],
          "reasonReference": [{"reference": "Condition/c1"}]}
    if consent_status:
        sr["supportingInfo"].append({"reference": "Consent/k1"})
    world = [
        {"resourceType": "PractitionerRole", "id": "ehr-role",
         "organization": {"reference": "Organization/ehr"}},
        {"resourceType": "Organization", "id": "cbo"},
        {"resourceType": "Task", "id": "t1", "status": "requested", "intent": "order",
         "focus": {"reference": "ServiceRequest/sr1"}, "for": {"reference": "Patient/p1"},
         "requester": {"reference": "PractitionerRole/ehr-role"},
         "owner": {"reference": "Organization/cbo"},
         "output": [{"type": {"text": "outcome"},
                     "valueReference": {"reference": "Procedure/pr1"}}]},
        sr,
        {"resourceType": "Patient", "id": "p1"},
        {"resourceType": "Patient", "id": "p2"},
        {"resourceType": "QuestionnaireResponse", "id": "qr1", "status": "completed"},
        {"resourceType": "Condition", "id": "c1"},
        {"resourceType": "Procedure", "id": "pr1", "status": "completed"},
        {"resourceType": "Task", "id": "t2", "owner": {"reference": "Organization/other"},
         "focus": {"reference": "ServiceRequest/sr2"}},
        {"resourceType": "ServiceRequest", "id": "sr2",
         "subject": {"reference": "Patient/p2"}},
    ]
    if consent_status:
        world.append({"resourceType": "Consent", "id": "k1", "status": consent_status})
    authors = {"ServiceRequest/sr1": "Organization/ehr", "QuestionnaireResponse/qr1":
               "Organization/ehr", "Condition/c1": "Organization/ehr",
               "Task/t1": "Organization/ehr", "Consent/k1": consent_author,
               "Procedure/pr1": "Organization/cbo", "Task/t2": "Organization/x",
               "ServiceRequest/sr2": "Organization/x", "Patient/p1": "Organization/ehr",
               "Patient/p2": "Organization/x"}
    return [(r, authors.get(f"{r['resourceType']}/{r['id']}")) for r in world]


def visible_references(org: str, world: list[tuple[dict, str | None]]) -> set[str]:
    return visible(org, world)


def test_referral_compartment_with_active_consent():
    visible = visible_references("Organization/cbo", _world("active"))
    assert visible == {"Organization/cbo", "PractitionerRole/ehr-role", "Task/t1",
                       "ServiceRequest/sr1", "Patient/p1", "Consent/k1",
                       "QuestionnaireResponse/qr1", "Condition/c1", "Procedure/pr1"}


@pytest.mark.parametrize("consent", [None, "draft", "inactive"])
def test_recipient_without_active_consent_sees_only_the_referral(consent):
    visible = visible_references("Organization/cbo", _world(consent))
    assert {"Task/t1", "ServiceRequest/sr1", "Patient/p1"} <= visible
    assert "QuestionnaireResponse/qr1" not in visible and "Condition/c1" not in visible
    assert "Task/t2" not in visible and "Patient/p2" not in visible


def test_consent_written_by_the_recipient_does_not_open_clinical_details():
    seen = visible_references("Organization/cbo", _world("active", "Organization/cbo"))
    assert "Consent/k1" in seen and "QuestionnaireResponse/qr1" not in seen


def test_healthcare_service_owner_counts_for_its_organization():
    world = _world("active")
    world[2] = ({**world[2][0], "owner": {"reference": "HealthcareService/hs1"}}, world[2][1])
    world.append(({"resourceType": "HealthcareService", "id": "hs1",
                   "providedBy": {"reference": "Organization/cbo"}}, "Organization/cbo"))
    assert "Task/t1" in visible_references("Organization/cbo", world)
    assert "Task/t1" not in visible_references("Organization/other", world)


def test_requester_org_sees_what_it_wrote_without_consent():
    visible = visible_references("Organization/ehr", _world(None))
    assert {"Task/t1", "ServiceRequest/sr1", "QuestionnaireResponse/qr1",
            "Condition/c1"} <= visible
    assert "ServiceRequest/sr2" not in visible


def test_the_asking_clinic_sees_a_patients_answers_and_their_scores():
    """Rules 12 and 13: a patient's answers named as the output of a Task the clinic
    requested, and the Observations derived from them (both written without an
    organization), are the clinic's to see; not the recipient's, not another clinic's."""
    world = _world("active")
    world += [
        ({"resourceType": "Task", "id": "tp", "status": "completed", "intent": "order",
          "for": {"reference": "Patient/p1"}, "owner": {"reference": "Patient/p1"},
          "requester": {"reference": "PractitionerRole/ehr-role"},
          "output": [{"type": {"text": "answers"},
                      "valueReference": {"reference": "QuestionnaireResponse/qr2"}}]},
         "Organization/ehr"),
        ({"resourceType": "QuestionnaireResponse", "id": "qr2", "status": "completed",
          "subject": {"reference": "Patient/p1"}}, None),
        ({"resourceType": "Observation", "id": "o2", "status": "final",
          "derivedFrom": [{"reference": "QuestionnaireResponse/qr2"}]}, None),
        ({"resourceType": "Observation", "id": "o3", "status": "final",
          "derivedFrom": [{"reference": "QuestionnaireResponse/qr9"}]}, None),
    ]
    assert {"QuestionnaireResponse/qr2", "Observation/o2"} <= visible_references(
        "Organization/ehr", world)
    assert "Observation/o3" not in visible_references("Organization/ehr", world)
    for org in ("Organization/cbo", "Organization/x"):
        seen = visible_references(org, world)
        assert "QuestionnaireResponse/qr2" not in seen and "Observation/o2" not in seen
    assert ReferencedBy("Task", "Task.output.value") in restrict_for(
        ctx("system/*.rs", organization="Organization/ehr"), "QuestionnaireResponse").rules


def test_the_clinic_sees_the_flag_its_risk_task_focuses_on():
    """Rule 14: the safety Flag a patient's answers raised (written without an
    organization) is visible to the organization that owns the risk Task focusing on it."""
    world = _world("active") + [
        ({"resourceType": "Task", "id": "risk", "status": "requested", "intent": "order",
          "for": {"reference": "Patient/p1"}, "owner": {"reference": "Organization/ehr"},
          "focus": {"reference": "Flag/f1"}}, None),
        ({"resourceType": "Flag", "id": "f1", "status": "active",
          "subject": {"reference": "Patient/p1"}}, None),
        ({"resourceType": "Flag", "id": "f2", "status": "active",
          "subject": {"reference": "Patient/p1"}}, None),
    ]
    assert "Flag/f1" in visible_references("Organization/ehr", world)
    assert "Flag/f2" not in visible_references("Organization/ehr", world)
    assert "Flag/f1" not in visible_references("Organization/cbo", world)


def test_audit_event_is_valid_fhir():
    c = AccessContext(client_id="app", user="dr_a", fhir_user="Practitioner/p1",
                      organization="Organization/ehr", token_id="abc",
                      scopes=parse_scopes("user/*.rs"))
    event = build_audit_event(c, "search-type", "4", entities=["Task/1"],
                              query="status=requested", description="403 denied",
                              address="127.0.0.1")
    assert_valid_fhir(event)
    assert event["action"] == "E" and event["outcome"] == "4"
    assert event["agent"][0]["who"]["reference"] == "Practitioner/p1"
    assert event["agent"][1]["who"]["identifier"]["value"] == "app"
    assert event["entity"][0]["what"]["reference"] == "Task/1"
    backend = build_audit_event(None, "token", "0", client_id="svc", authentication=True)
    assert_valid_fhir(backend)
    assert backend["agent"][0]["requestor"] is True


def test_provenance_is_valid_fhir():
    user = AccessContext(client_id="app", user="dr_a", fhir_user="Practitioner/p1",
                         organization="Organization/ehr")
    prov = build_provenance(user, "Task/1/_history/2", "update")
    assert_valid_fhir(prov)
    assert prov["agent"][0]["onBehalfOf"] == {"reference": "Organization/ehr"}
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"
    backend = build_provenance(AccessContext(client_id="svc"), "ServiceRequest/1", "create")
    assert_valid_fhir(backend)
    assert backend["agent"][0]["who"]["identifier"]["value"] == "svc"


# -- open referrals offered to several organizations ----------------------------------------
CANDIDATE = "http://mh-referral.example.org/fhir/StructureDefinition/task-candidate"


def _offer_world(status: str = "requested", owner: str | None = None
                 ) -> list[tuple[dict, str | None]]:
    """The referral of `_world("active")` offered to cbo and cbo2 instead of owned."""
    world = _world("active")
    task = dict(world[2][0], status=status)
    task.pop("owner")
    task.pop("output")
    task["extension"] = [{"url": CANDIDATE, "valueReference": {"reference": ref}}
                         for ref in ("Organization/cbo", "HealthcareService/hs2")]
    if owner:
        task["owner"] = {"reference": owner}
    world[2] = (task, world[2][1])
    world.append(({"resourceType": "HealthcareService", "id": "hs2",
                   "providedBy": {"reference": "Organization/cbo2"}}, "Organization/cbo2"))
    return world


REFERRAL = {"Task/t1", "ServiceRequest/sr1", "Patient/p1", "Consent/k1",
            "QuestionnaireResponse/qr1", "Condition/c1"}


@pytest.mark.parametrize("org", ["Organization/cbo", "Organization/cbo2"])
def test_candidates_see_the_open_referral_as_an_owner_would(org):
    assert REFERRAL <= visible_references(org, _offer_world())


def test_candidates_see_clinical_details_only_with_consent():
    world = [(r, a) for r, a in _offer_world() if r["resourceType"] != "Consent"]
    seen = visible_references("Organization/cbo2", world)
    assert {"Task/t1", "ServiceRequest/sr1", "Patient/p1"} <= seen
    assert not seen & {"QuestionnaireResponse/qr1", "Condition/c1"}


def test_the_claimer_sees_everything_the_others_see_it_withdrawn():
    claimed = _offer_world("accepted", owner="Organization/cbo")
    assert REFERRAL <= visible_references("Organization/cbo", claimed)
    assert not visible_references("Organization/cbo2", claimed) & REFERRAL


def test_a_declined_candidate_keeps_only_what_it_wrote():
    world = _offer_world()
    task = dict(world[2][0], extension=world[2][0]["extension"][:1])  # cbo2 declined
    world[2] = (task, world[2][1])
    world.append(({"resourceType": "Communication", "id": "note",
                   "subject": {"reference": "Patient/p1"}}, "Organization/cbo2"))
    seen = visible_references("Organization/cbo2", world)
    assert "Communication/note" in seen
    assert not seen & (REFERRAL - {"Patient/p1"})  # its own note keeps the patient in view


@pytest.mark.parametrize("status", ["draft", "rejected", "cancelled"])
def test_an_offer_that_is_not_requested_is_not_visible(status):
    assert not visible_references("Organization/cbo", _offer_world(status)) & REFERRAL


def test_an_organization_not_listed_sees_nothing_of_an_offer():
    assert not visible_references("Organization/other", _offer_world()) & REFERRAL
