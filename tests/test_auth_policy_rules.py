"""Access policy rules one by one (pure): the exact status, code, diagnostics and header of
each refusal, when a stored resource is hidden (404) and when new content is refused (403),
and the narrowing `restrict_for` hands to storage for each kind of scope and caller."""

from __future__ import annotations

import pytest

from fhir_server.auth.context import SYSTEM, AccessContext
from fhir_server.auth.policy import (
    Alternative,
    check_interaction,
    insufficient_scope,
    require_admin,
    restrict_for,
    searchable_types,
)
from fhir_server.auth.referral_compartment import OrgRef, WrittenBy
from fhir_server.errors import FhirError
from tests.test_auth_policy import OBS_P1, ctx

ORG = {"resourceType": "Organization", "id": "org1", "name": "Harbor"}
PATIENT_P1 = {"resourceType": "Patient", "id": "p1"}
CHALLENGE = {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}


def refusal(*args, **kw) -> tuple[int, str, str, dict] | None:
    """(status, code, diagnostics, headers) of check_interaction's refusal, or None."""
    try:
        check_interaction(*args, **kw)
    except FhirError as exc:
        return exc.status, exc.code, exc.diagnostics, exc.headers
    return None


def test_insufficient_scope_names_interaction_letter_and_target():
    assert refusal(ctx("user/Patient.rs"), "read", "Task") == (
        403, "forbidden", "insufficient_scope: no granted scope allows 'read' (r) on Task",
        CHALLENGE)
    assert refusal(ctx("user/Patient.rs"), "search-system", None) is None
    assert refusal(ctx("user/Patient.r"), "search-system", None) == (
        403, "forbidden",
        "insufficient_scope: no granted scope allows 'search-system' (s) on the system",
        CHALLENGE)
    assert insufficient_scope("$everything", "Patient").diagnostics == (
        "insufficient_scope: no granted scope allows '$everything' (?) on Patient")


def test_type_level_check_passes_with_a_covering_scope():
    assert refusal(ctx("user/Observation.s?status=final"), "search-type", "Observation") is None
    assert refusal(ctx("user/Observation.c"), "create", "Observation") is None


def test_stored_resource_outside_the_scope_is_hidden_new_content_refused():
    c = ctx("user/Observation.rsu?status=final")
    amended = {**OBS_P1, "status": "amended"}
    assert refusal(c, "read", "Observation", amended)[:3] == (
        404, "not-found", "Resource Observation/o1 is not known")
    assert refusal(c, "update", "Observation", amended, stored=False) == (
        403, "forbidden", "insufficient_scope: the resource is outside the granted scopes' "
        "patient context or granular filter", CHALLENGE)
    assert refusal(c, "update", "Observation", amended)[0] == 404
    assert refusal(c, "read", "Observation", amended, stored=False)[0] == 403
    creator = ctx("user/Observation.c?status=final")
    assert refusal(creator, "create", "Observation", amended)[0] == 403
    assert refusal(creator, "create", "Observation", amended, stored=True)[0] == 404
    assert refusal(ctx("user/Observation.r?status=final"), "vread", "Observation",
                   {"resourceType": "Observation", "status": "amended"})[:3] == (
        404, "not-found", "Resource Observation/? is not known")
    untyped = {"id": "o7", "status": "amended"}
    assert refusal(c, "read", "Observation", untyped)[2] == "Resource Observation/o7 is not known"
    assert refusal(c, "read", None, untyped)[2] == "Resource ?/o7 is not known"
    other = {"resourceType": "Condition", "id": "c1"}
    assert refusal(ctx("user/*.r?status=final"), "read", "Observation", other)[2] == (
        "Resource Condition/c1 is not known")


def test_patient_scopes():
    c = ctx("patient/*.cruds", patient="p1")
    assert refusal(c, "read", "Patient", PATIENT_P1) is None
    assert refusal(c, "read", "Patient", {"resourceType": "Patient", "id": "p2"})[0] == 404
    assert refusal(c, "update", "Observation", OBS_P1) is None
    assert refusal(c, "read", "Organization", ORG) is None  # shared data: read-only
    assert refusal(c, "create", "Organization", ORG)[0] == 403
    assert refusal(c, "delete", "Organization", ORG)[0] == 404
    unbound = ctx("patient/*.cruds")
    assert refusal(unbound, "read", "Organization", ORG)[0] == 403  # no patient: no scope
    both = ctx("patient/*.rs user/Organization.u", patient="p1")
    assert refusal(both, "update", "Organization", ORG) is None


def test_fhir_user_reads_itself_only():
    me = {"resourceType": "Practitioner", "id": "me"}
    c = ctx("openid fhirUser", fhir_user="Practitioner/me")
    assert refusal(c, "read", "Practitioner", me) is None
    assert refusal(c, "vread", "Practitioner", me) is None
    assert refusal(c, "update", "Practitioner", me)[0] == 403
    assert refusal(c, "history-instance", "Practitioner", me)[0] == 403
    assert refusal(c, "read", "Practitioner", {**me, "id": "you"})[0] == 403
    assert refusal(ctx("openid"), "read", "Practitioner", me)[0] == 403


def test_unrestricted_callers():
    for caller in (SYSTEM, AccessContext(auth_disabled=True)):
        assert refusal(caller, "delete", "AuditEvent", {"resourceType": "AuditEvent"}) is None
        assert restrict_for(caller, "AuditEvent").unrestricted


def test_restrict_for_each_kind_of_scope():
    p1 = ctx("patient/*.rs", patient="p1")
    assert restrict_for(p1, "Patient").alternatives == (Alternative((), "p1", ("link",)),)
    assert restrict_for(p1, "Organization").alternatives is None  # shared, not narrowed
    assert restrict_for(ctx("patient/*.rs"), "Observation").allowed is False
    granular = restrict_for(ctx("user/Observation.rs?status=final"), "Observation")
    assert granular.alternatives == (Alternative((("status", "final"),), None, ()),)
    assert not granular.unrestricted
    wide = ctx("user/Observation.rs?status=final user/*.s")
    assert restrict_for(wide, "Observation").alternatives is None
    assert restrict_for(wide, "Observation").unrestricted
    reader = ctx("user/Observation.r")
    assert restrict_for(reader, "Observation").allowed is False
    assert restrict_for(reader, "Observation", "read").allowed is True
    assert restrict_for(ctx("user/*.r"), "Observation", "history-type").allowed is False


@pytest.mark.parametrize("caller, res_type", [
    (SYSTEM, "Task"), (ctx("user/Patient.rs"), "Task"), (ctx("user/*.rs"), "Task"),
    (ctx("user/*.rs", organization="Organization/cbo"), "Organization"),
    (ctx("user/*.rs", organization="Organization/cbo"), "AuditEvent"),
    (ctx("user/*.rs", organization="Organization/cbo"), "Task"),
])
def test_restriction_names_its_type(caller, res_type):
    assert restrict_for(caller, res_type).res_type == res_type


def test_restrict_for_organizations():
    c = ctx("user/Task.rs?status=requested user/Organization.rs user/AuditEvent.rs",
            organization="Organization/cbo")
    task = restrict_for(c, "Task")
    assert (task.allowed, task.organization, task.shared) == (True, "Organization/cbo", False)
    assert task.alternatives == (Alternative((("status", "requested"),), None, ()),)
    assert task.rules[:3] == (WrittenBy(), OrgRef("Task.owner"), OrgRef("Task.requester"))
    assert [type(rule).__name__ for rule in task.rules[3:]] == ["OfferedTo"]
    org = restrict_for(c, "Organization")
    assert (org.allowed, org.organization, org.rules, org.shared) == (
        True, "Organization/cbo", (), True)
    assert not org.unrestricted
    named = ctx("user/Organization.rs?name=Harbor", organization="Organization/cbo")
    assert restrict_for(named, "Organization").alternatives == (
        Alternative((("name", "Harbor"),), None, ()),)
    audit = restrict_for(c, "AuditEvent")
    assert (audit.allowed, audit.organization) == (False, "Organization/cbo")
    admin = ctx("user/*.rs", organization="Organization/cbo", is_admin=True)
    assert restrict_for(admin, "Task").organization is None
    assert searchable_types(ctx("user/Task.s user/Patient.rs"),
                            ["Task", "Patient", "Flag"]) == ["Task", "Patient"]


@pytest.mark.parametrize("caller, allowed", [
    (ctx("user/*.cruds"), False),
    (ctx("user/*.rs", is_admin=True), True),
    (SYSTEM, True),
    (AccessContext(auth_disabled=True), False),
])
def test_require_admin(caller, allowed):
    if allowed:
        require_admin(caller)
        return
    with pytest.raises(FhirError) as err:
        require_admin(caller)
    assert (err.value.status, err.value.code, err.value.headers) == (403, "forbidden", CHALLENGE)
