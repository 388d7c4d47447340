"""The organization policy's rules, one by one, in process (fast: `make mutation`'s `access`
target runs them for every mutant): the referral compartment compiled to SQL
(`fhir_server/interactions/access.py`, `fhir_server/storage/access_sql.py`), the write checks
(author, directory owner) with their denial audit, and the reference check of writes
(`fhir_server/interactions/reference_check.py`). The same rules over HTTP with real tokens:
`test_access_http.py`, `test_security_findings.py`; all of them at once against an
independent model: `test_access_property.py`."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from fhir_server.auth.context import NOBODY, SYSTEM, AccessContext
from fhir_server.auth.scopes import parse_scopes
from fhir_server.config import Settings
from fhir_server.errors import FhirError
from fhir_server.interactions import access, reference_check
from fhir_server.interactions.context import Call
from fhir_server.interactions.phases import WriteEvent
from fhir_server.storage import access_sql
from fhir_server.storage.repository import Repository
from fhir_server.storage.schema import resources
from fhir_server.storage.search_sql import find_resources
from fhir_server.wiring import build_services

BASE = "http://fhir.test/fhir"
ORGS = ("A", "B", "C", "E")


def org(name: str) -> dict:
    return {"reference": f"Organization/{name}"}


def ref(target: str) -> dict:
    return {"reference": target}


def caller(name: str | None, scopes: str = "system/*.cruds", **extra: Any) -> AccessContext:
    """A Backend Services client of Organization/`name` (None: no organization)."""
    return AccessContext(client_id=f"client-{name}", scopes=parse_scopes(scopes),
                         organization=f"Organization/{name}" if name else None, **extra)


#: What each organization writes: clinic A screens and refers patients p1 (to B, consent
#: active), p2 (to C, no consent), p4 (to C, consent withdrawn) and keeps p3 to itself; B
#: records the outcome of p1's referral; C's Consent on p2 cannot open A's screening.
WORLD: dict[str | None, list[dict]] = {
    None: [
        *({"resourceType": "Organization", "id": o, "name": f"Org {o}"} for o in ORGS),
        {"resourceType": "PractitionerRole", "id": "role-b", "organization": org("B")},
        {"resourceType": "PractitionerRole", "id": "role-gone", "organization": org("E")},
        {"resourceType": "HealthcareService", "id": "hs-b", "providedBy": org("B")},
        {"resourceType": "HealthcareService", "id": "hs-c", "providedBy": org("C")},
        {"resourceType": "Location", "id": "loc-b", "managingOrganization": org("B")},
        # patients loaded by the server: B sees p5 because it wrote about p5 (and p6 not,
        # since what it wrote about p6 is deleted)
        {"resourceType": "Patient", "id": "p5"},
        {"resourceType": "Patient", "id": "p6"},
    ],
    "A": [
        *({"resourceType": "Patient", "id": p, "managingOrganization": org("A")}
          for p in ("p1", "p2", "p3", "p4")),
        {"resourceType": "Consent", "id": "consent1", "status": "active",
         "patient": ref("Patient/p1")},
        {"resourceType": "Consent", "id": "consent4", "status": "inactive",
         "patient": ref("Patient/p4")},
        *({"resourceType": "QuestionnaireResponse", "id": f"qr{n}", "status": "completed",
           "subject": ref(f"Patient/p{n}")} for n in (1, 2, 3, 4)),
        {"resourceType": "Condition", "id": "cond1", "subject": ref("Patient/p1")},
        # ids that other types referenced from B's compartment also carry: a rule that
        # follows a reference matches its target's type, not its id alone
        {"resourceType": "Patient", "id": "cond1", "managingOrganization": org("A")},
        {"resourceType": "Observation", "id": "obs1", "status": "final",
         "code": {"text": "PHQ-9"}, "subject": ref("Patient/p1")},
        {"resourceType": "Encounter", "id": "enc1", "status": "finished",
         "subject": ref("Patient/p1")},
        {"resourceType": "ServiceRequest", "id": "sr1", "status": "active",
         "intent": "order", "subject": ref("Patient/p1"), "requester": org("A"),
         "performer": [ref("HealthcareService/hs-b")], "encounter": ref("Encounter/enc1"),
         "supportingInfo": [ref("Consent/consent1"), ref("QuestionnaireResponse/qr1"),
                            ref("Observation/obs1")],
         "reasonReference": [ref("Condition/cond1")]},
        # an active Consent of A's that sr2 names outside supportingInfo opens nothing
        {"resourceType": "Consent", "id": "consent2a", "status": "active",
         "patient": ref("Patient/p2")},
        {"resourceType": "ServiceRequest", "id": "sr2", "status": "active",
         "intent": "order", "subject": ref("Patient/p2"), "requester": org("A"),
         "basedOn": [ref("Consent/consent2a")],
         "supportingInfo": [ref("QuestionnaireResponse/qr2")]},
        # an active resource of another type with the id of sr4's (inactive) Consent
        {"resourceType": "ServiceRequest", "id": "consent4", "status": "active",
         "intent": "order", "subject": ref("Patient/p3"), "requester": org("A")},
        {"resourceType": "ServiceRequest", "id": "sr4", "status": "active",
         "intent": "order", "subject": ref("Patient/p4"), "requester": org("A"),
         "supportingInfo": [ref("Consent/consent4"), ref("QuestionnaireResponse/qr4")]},
        {"resourceType": "Task", "id": "t1", "status": "accepted", "intent": "order",
         "focus": ref("ServiceRequest/sr1"), "for": ref("Patient/p1"),
         "requester": org("A"), "owner": ref("PractitionerRole/role-b")},
        {"resourceType": "Task", "id": "t2", "status": "requested", "intent": "order",
         "focus": ref("ServiceRequest/sr2"), "for": ref("Patient/p2"),
         "requester": org("A"), "owner": ref("HealthcareService/hs-c")},
        {"resourceType": "Task", "id": "t4", "status": "requested", "intent": "order",
         "focus": ref("ServiceRequest/sr4"), "for": ref("Patient/p4"),
         "requester": org("A"), "owner": org("C")},
    ],
    "B": [
        {"resourceType": "Procedure", "id": "proc1", "status": "completed",
         "subject": ref("Patient/p1"), "performer": [{"actor": org("B")}],
         "reasonReference": [ref("Condition/cond1")]},
        {"resourceType": "Goal", "id": "goal-b", "lifecycleStatus": "active",
         "description": {"text": "sleep"}, "subject": ref("Patient/p1")},
        {"resourceType": "Goal", "id": "goal-b5", "lifecycleStatus": "active",
         "description": {"text": "walk"}, "subject": ref("Patient/p5")},
        {"resourceType": "Goal", "id": "goal-b6", "lifecycleStatus": "active",
         "description": {"text": "read"}, "subject": ref("Patient/p6")},
    ],
    "E": [
        {"resourceType": "Patient", "id": "pe"},
        {"resourceType": "Consent", "id": "qr1", "status": "active",
         "patient": ref("Patient/pe")},
    ],
    "C": [
        # C's own active Consent beside A's ServiceRequest sr2 cannot open A's screening.
        {"resourceType": "Consent", "id": "consent2c", "status": "active",
         "patient": ref("Patient/p2")},
        {"resourceType": "Procedure", "id": "proc-c", "status": "completed",
         "subject": ref("Patient/p2"), "performer": [{"actor": org("B")}]},
    ],
}

#: Every resource of WORLD each organization may read (directory entries aside).
EXPECTED = {
    "A": {"Patient/p1", "Patient/p2", "Patient/p3", "Patient/p4", "Patient/cond1",
          "Consent/consent2a", "ServiceRequest/consent4",
          "Consent/consent1",
          "Consent/consent4", "QuestionnaireResponse/qr1", "QuestionnaireResponse/qr2",
          "QuestionnaireResponse/qr3", "QuestionnaireResponse/qr4", "Condition/cond1",
          "Observation/obs1", "Encounter/enc1", "ServiceRequest/sr1", "ServiceRequest/sr2",
          "ServiceRequest/sr4", "Task/t1", "Task/t2", "Task/t4"},
    "B": {"Task/t1", "ServiceRequest/sr1", "Patient/p1", "Consent/consent1",
          "QuestionnaireResponse/qr1", "Observation/obs1", "Condition/cond1", "Encounter/enc1",
          "Procedure/proc1", "Goal/goal-b", "Procedure/proc-c", "Patient/p5", "Goal/goal-b5"},
    "C": {"Task/t2", "ServiceRequest/sr2", "Patient/p2", "Task/t4", "ServiceRequest/sr4",
          "Patient/p4", "Consent/consent4", "Consent/consent2c", "Procedure/proc-c"},
    "E": {"Consent/qr1", "Patient/pe"},
}
CLINICAL = ("Patient", "Consent", "QuestionnaireResponse", "Condition", "Observation",
            "Encounter", "ServiceRequest", "Task", "Procedure", "Goal")


@pytest.fixture(scope="module")
def world(database):
    settings = Settings.from_env(
        database_url=database.url.render_as_string(hide_password=False), base_url=BASE)
    services = build_services(settings, database)
    for author, batch in WORLD.items():
        with database.write(author_org=f"Organization/{author}" if author else None) as conn:
            repo = Repository(conn)
            for resource in batch:
                repo.create(dict(resource), res_id=resource["id"], method="PUT")
    with database.write(author_org="Organization/A") as conn:
        Repository(conn).create({"resourceType": "Patient", "id": "p-gone"}, res_id="p-gone",
                                method="PUT")
    with database.write() as conn:
        Repository(conn).delete("PractitionerRole", "role-gone")
        Repository(conn).delete("Patient", "p-gone")
        Repository(conn).delete("Goal", "goal-b6")
    return services


def call_as(services, ctx: Any) -> Call:
    return Call(services=services, base_url=BASE, access=ctx)


def stored(conn, reference: str):
    return Repository(conn).read(*reference.split("/"))


def visible_to(world, ctx: Any, types=CLINICAL, interaction: str = "search-type") -> set[str]:
    """What a search of each type returns to `ctx` (the search narrowing)."""
    call = call_as(world, ctx)
    with world.db.read() as conn:
        restrict = access.restriction(conn, call, interaction)
        return {f"{r['resourceType']}/{r['id']}" for t in types
                for r in find_resources(conn, t, [], restrict=restrict, empty_ok=True)}


def readable(world, ctx: Any, reference: str, interaction: str = "read") -> bool:
    """May `ctx` read the stored resource (check_existing: 404 when hidden)?"""
    call = call_as(world, ctx)
    with world.db.read() as conn:
        try:
            access.check_existing(conn, call, interaction, stored(conn, reference))
        except FhirError as exc:
            assert (exc.status, exc.code) == (404, "not-found"), exc.outcome()
            assert exc.diagnostics == f"Resource {reference} is not known"
            assert call.pending_audit[-1]["outcome"] == "4"
            assert call.pending_audit[-1]["subtype"][0]["code"] == interaction
            assert [e["what"]["reference"] for e in call.pending_audit[-1]["entity"]] == [
                reference]
            return False
    return True


# -- reads: the referral compartment --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_organization_searches_exactly_its_compartment(world, name):
    assert visible_to(world, caller(name)) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_organization_reads_exactly_its_compartment(world, name):
    every = {ref_ for refs in EXPECTED.values() for ref_ in refs} | {
        "QuestionnaireResponse/qr4", "Consent/consent2c"}
    assert {r for r in every if readable(world, caller(name), r)} == EXPECTED[name]


def test_directory_is_shared_and_deleted_roles_lend_nothing(world):
    directory = {"Organization/A", "Organization/B", "Organization/C", "Organization/E",
                 "PractitionerRole/role-b", "HealthcareService/hs-b", "HealthcareService/hs-c",
                 "Location/loc-b"}
    types = ("Organization", "PractitionerRole", "HealthcareService", "Location")
    assert visible_to(world, caller("E"), types) == directory
    with world.db.read() as conn:
        assert access_sql.org_refs(conn, "Organization/B") == {
            ("Organization", "B"), ("PractitionerRole", "role-b"),
            ("HealthcareService", "hs-b")}
        assert access_sql.org_refs(conn, "Organization/E") == {("Organization", "E")}


def test_the_restriction_of_several_types_at_once(world):
    """`restriction` with and without the types a row can hold (includes, history)."""
    call = call_as(world, caller("B"))
    every = {(t, i) for name in EXPECTED for t, i in
             (r.split("/") for r in EXPECTED[name])}
    with world.db.read() as conn:
        restrict = access.restriction(conn, call)
        r = resources.alias()
        rows = conn.execute(select(r.c.res_type, r.c.res_id).where(
            r.c.deleted.is_(False), restrict(r))).all()
        seen = {f"{t}/{i}" for t, i in rows if (t, i) in every}
        assert seen == EXPECTED["B"]
        assert {t for t, _ in rows} >= {"Organization", "PractitionerRole", "Task"}
        rows = conn.execute(select(r.c.res_type, r.c.res_id).where(
            r.c.deleted.is_(False), restrict(r, ["Patient", "Organization"]))).all()
        assert {f"{t}/{i}" for t, i in rows} == {
            "Patient/p1", "Patient/p5", "Organization/A", "Organization/B", "Organization/C",
            "Organization/E"}


def test_types_only_the_author_reads_are_narrowed_to_the_author(world):
    """A type without referral rules (Flag) is visible only to the organization that wrote
    it, in a search of several types too."""
    with world.db.write(author_org="Organization/C") as conn:
        Repository(conn).create({"resourceType": "Flag", "status": "active",
                                 "code": {"text": "x"}, "subject": ref("Patient/p2")},
                                res_id="flag-c", method="PUT")
    for name, expected in (("C", {"Flag/flag-c"}), ("B", set()), ("A", set())):
        call = call_as(world, caller(name))
        with world.db.read() as conn:
            restrict = access.restriction(conn, call)
            r = resources.alias()
            rows = conn.execute(select(r.c.res_type, r.c.res_id).where(
                restrict(r, ["Flag", "Patient"]), r.c.res_type == "Flag")).all()
        assert {f"{t}/{i}" for t, i in rows} == expected, name


def test_unrestricted_and_failing_closed(world):
    with world.db.read() as conn:
        assert access.restriction(conn, call_as(world, SYSTEM)) is None
        assert access.restriction(conn, call_as(world, caller(None, is_admin=True))) is None
        assert access.restriction(conn, call_as(world, caller("A", is_admin=True))) is not None
        assert access.restriction(conn, call_as(world, None)) is not None
    assert access.ctx_of(call_as(world, None)) is NOBODY
    assert access.ctx_of(call_as(world, "not a context")) is NOBODY
    admin_of_a = caller("A", is_admin=True)
    assert visible_to(world, admin_of_a, ("Procedure",)) == {"Procedure/proc1",
                                                             "Procedure/proc-c"}
    assert visible_to(world, NOBODY, ("Patient",)) == set()
    with world.db.read() as conn, pytest.raises(FhirError) as err:
        access.check_existing(conn, call_as(world, None), "read", stored(conn, "Patient/p1"))
    assert (err.value.status, err.value.code) == (403, "forbidden")


def test_a_deleted_resource_is_named_by_its_type_and_id(world):
    """A deleted resource (no body left) outside a granular scope is a 404 naming it."""
    with world.db.read() as conn:
        gone = stored(conn, "Patient/p-gone")
        assert gone.deleted and gone.body is None
        call = call_as(world, caller("A", "system/Patient.rs?_id=p3"))
        with pytest.raises(FhirError) as err:
            access.check_existing(conn, call, "read", gone)
        assert (err.value.status, err.value.code) == (404, "not-found")
        assert err.value.diagnostics == "Resource Patient/p-gone is not known"


def test_patient_context_narrows_to_the_patient(world):
    """A patient-context scope (launch) narrows to that patient's compartment, within
    what the organization may see."""
    ctx = caller("B", "patient/*.rs", patient="p1")
    assert visible_to(world, ctx, ("Patient", "Observation", "Task", "Procedure")) == {
        "Patient/p1", "Observation/obs1", "Task/t1", "Procedure/proc1"}
    assert readable(world, ctx, "Observation/obs1")
    assert not readable(world, ctx, "Patient/p2")
    granular = caller("A", "system/Patient.rs system/Observation.rs?status=final")
    assert visible_to(world, granular, ("Observation",)) == {"Observation/obs1"}
    other = caller("A", "system/Observation.rs?status=amended")
    assert visible_to(world, other, ("Observation",)) == set()


def test_a_scope_with_an_unknown_parameter_opens_nothing(world):
    """Granular scope parameters are parsed strictly: one the server does not know
    refuses the search (400) instead of being dropped (which would widen the scope)."""
    with pytest.raises(FhirError) as err:
        visible_to(world, caller("A", "system/Observation.rs?nonsense=1"), ("Observation",))
    assert (err.value.status, err.value.code) == (400, "not-supported")


def test_new_content_outside_a_granular_scope_is_403_on_update_too(world):
    """New content is checked as new content (403), not as a stored resource (404)."""
    call = call_as(world, caller("A", "system/Observation.cruds?status=final"))
    amended = {"resourceType": "Observation", "id": "obs1", "status": "amended"}
    for interaction in ("create", "update", "patch"):
        with pytest.raises(FhirError) as err:
            access.check_new(call, interaction, "Observation", amended)
        assert (err.value.status, err.value.code) == (403, "forbidden"), interaction
        assert [e["what"]["reference"] for e in call.pending_audit[-1]["entity"]] == [
            "Observation/obs1"]
    access.check_new(call, "update", "Observation", {**amended, "status": "final"})


def test_scope_refusals_are_403_and_audited(world):
    call = call_as(world, caller("B", "system/Patient.rs"))
    with pytest.raises(FhirError) as err:
        access.check_type(call, "search-type", "Task")
    assert (err.value.status, err.value.code) == (403, "forbidden")
    assert call.pending_audit[-1]["outcome"] == "4"
    access.check_type(call, "search-type", "Patient")
    access.check_type(call_as(world, SYSTEM), "delete", "Task")
    with pytest.raises(FhirError) as err:
        access.check_new(call, "create", "Patient", {"resourceType": "Patient", "id": "n"})
    assert (err.value.status, err.value.code) == (403, "forbidden")
    assert [e["what"]["reference"] for e in call.pending_audit[-1]["entity"]] == ["Patient/n"]
    access.check_new(call_as(world, SYSTEM), "create", "Patient", {"resourceType": "Patient"})
    with world.db.read() as conn:
        with pytest.raises(FhirError) as err:
            access.check_existing(conn, call, "update", stored(conn, "Patient/p1"))
        assert (err.value.status, err.value.code) == (403, "forbidden")
        entry = call.pending_audit[-1]
        assert [e["what"]["reference"] for e in entry["entity"]] == ["Patient/p1"]


# -- writes: the author rule and the directory owner ---------------------------------------
@pytest.mark.parametrize("interaction", ["update", "patch", "delete"])
def test_only_the_author_changes_a_record(world, interaction):
    """B may read A's Consent through the referral but not change it (403, audited);
    A may; workflow types and administrators are left to their own rules."""
    call = call_as(world, caller("B"))
    with world.db.read() as conn:
        consent = stored(conn, "Consent/consent1")
        with pytest.raises(FhirError) as err:
            access.check_existing(conn, call, interaction, consent)
        assert (err.value.status, err.value.code) == (403, "forbidden")
        assert "Consent/consent1 was written by another organization" in err.value.diagnostics
        event = call.pending_audit[-1]
        assert [e["what"]["reference"] for e in event["entity"]] == ["Consent/consent1"]
        assert event["outcome"] == "4"
        assert event["subtype"][0]["code"] == interaction
        access.check_existing(conn, call, "read", consent)
        access.check_existing(conn, call_as(world, caller("A")), interaction, consent)
        access.check_existing(conn, call, interaction, stored(conn, "Task/t1"))
        access.check_existing(conn, call, interaction, stored(conn, "ServiceRequest/sr1"))
        admin = caller("B", is_admin=True)
        access.check_existing(conn, call_as(world, admin), interaction, consent)


@pytest.mark.parametrize("interaction", ["create", "update", "delete"])
def test_only_its_organization_changes_a_directory_entry(world, interaction):
    for entry, owner in (({"resourceType": "Location", "id": "loc-b",
                           "managingOrganization": org("B")}, "B"),
                         ({"resourceType": "Organization", "id": "B"}, "B"),
                         ({"resourceType": "HealthcareService", "id": "hs-b",
                           "providedBy": org("B")}, "B")):
        reference = f"{entry['resourceType']}/{entry['id']}"
        call = call_as(world, caller("C"))
        with pytest.raises(FhirError) as err:
            access.check_new(call, interaction, entry["resourceType"], entry)
        assert (err.value.status, err.value.code) == (403, "forbidden"), reference
        assert err.value.diagnostics.startswith(f"{reference} belongs to another organization")
        assert [e["what"]["reference"] for e in call.pending_audit[-1]["entity"]] == [
            reference]
        assert call.pending_audit[-1]["subtype"][0]["code"] == interaction
        access.check_new(call_as(world, caller(owner)), interaction, entry["resourceType"],
                         entry)
        access.check_new(call_as(world, caller("C", is_admin=True)), interaction,
                         entry["resourceType"], entry)
    call = call_as(world, caller("C"))
    access.check_new(call, "read", "Location", {"resourceType": "Location", "id": "loc-b",
                                                "managingOrganization": org("B")})
    access.check_new(call, interaction, "Patient", {"resourceType": "Patient", "id": "x"})
    with world.db.read() as conn:
        location = stored(conn, "Location/loc-b")
        access.check_existing(conn, call, "read", location)
        if interaction != "create":
            with pytest.raises(FhirError) as err:
                access.check_existing(conn, call, interaction, location)
            assert (err.value.status, err.value.code) == (403, "forbidden")
            assert err.value.diagnostics.startswith("Location/loc-b belongs to another")


def test_owns_directory_entry(world):
    b, c = caller("B"), caller("C")
    location = {"resourceType": "Location", "id": "l", "managingOrganization": org("B")}
    assert access.owns_directory_entry(b, location)
    assert not access.owns_directory_entry(c, location)
    assert not access.owns_directory_entry(c, {"resourceType": "Location", "id": "l"})
    assert access.owns_directory_entry(c, {"resourceType": "Organization", "id": "C"})
    assert not access.owns_directory_entry(c, {"resourceType": "Organization", "id": "B"})
    assert access.owns_directory_entry(c, {"resourceType": "Patient", "id": "x"})
    assert access.owns_directory_entry(caller(None), location)
    assert access.owns_directory_entry(caller("C", is_admin=True), location)


# -- writes: references are capabilities ----------------------------------------------------
def check_write(world, ctx: Any, new: dict, previous: dict | None = None,
                targets: frozenset = frozenset()) -> FhirError | None:
    call = call_as(world, ctx)
    call.transaction_targets = targets
    with world.db.read() as conn:
        try:
            event = WriteEvent(call=call, conn=conn, interaction="create",
                               res_type=new["resourceType"], res_id=new.get("id", "new"),
                               previous=previous, resource=new)
            assert reference_check.check_write(event) == []
        except FhirError as exc:
            return exc
    return None


def test_a_write_may_reference_only_what_the_writer_reads(world):
    new = {"resourceType": "ServiceRequest", "subject": ref("Patient/p2"),
           "supportingInfo": [ref("QuestionnaireResponse/qr2"), ref("Consent/consent2c")]}
    error = check_write(world, caller("C"), new)
    assert error is not None and (error.status, error.code) == (422, "processing")
    assert [(i.severity, i.code, i.expression) for i in error.issues] == [
        ("error", "processing", ["ServiceRequest.supportingInfo[0]"])]
    assert error.diagnostics == (
        "Reference 'QuestionnaireResponse/qr2' cannot be resolved: there is no such "
        "resource on this server that you may read")
    assert check_write(world, caller("A"), {**new, "supportingInfo": new["supportingInfo"][:1]}
                       ) is None  # A wrote both
    error = check_write(world, caller("A"), new)  # but may not see C's own Consent
    assert [i.expression for i in error.issues] == [["ServiceRequest.supportingInfo[1]"]]
    missing = {"resourceType": "Observation", "subject": ref(f"{BASE}/Patient/nobody"),
               "focus": [ref("Patient/p3/_history/1")]}
    error = check_write(world, caller("B"), missing)
    assert [(i.code, i.expression) for i in error.issues] == [
        ("processing", ["Observation.subject"]), ("processing", ["Observation.focus[0]"])]
    # the server itself and administrators: existence only
    assert check_write(world, SYSTEM, {"resourceType": "Observation",
                                       "subject": ref("Patient/p3")}) is None
    admin = caller(None, is_admin=True)
    assert check_write(world, admin, {"resourceType": "Observation",
                                      "subject": ref("Patient/p3")}) is None
    error = check_write(world, SYSTEM, missing)  # Patient/p3 exists
    assert [i.expression for i in error.issues] == [["Observation.subject"]]


def test_a_write_is_checked_on_the_references_it_adds(world):
    previous = {"resourceType": "ServiceRequest", "supportingInfo": [ref("Patient/p3")]}
    new = {**previous, "subject": ref("Patient/p1")}
    assert check_write(world, caller("B"), new, previous) is None
    new = {**previous, "subject": ref("Patient/p4")}
    error = check_write(world, caller("B"), new, previous)
    assert [i.expression for i in error.issues] == [["ServiceRequest.subject"]]
    # references to what the same transaction writes are checked by that entry
    assert check_write(world, caller("B"), new, previous,
                       frozenset({("Patient", "p4")})) is None
    assert check_write(world, caller("B"), {"resourceType": "Bundle", "type": "collection",
                                            "entry": [{"resource": new}]}) is None
    deletion = WriteEvent(call=call_as(world, caller("B")), conn=None,  # type: ignore[arg-type]
                          interaction="delete", res_type="ServiceRequest", res_id="sr",
                          previous=previous, resource=None)
    assert reference_check.check_write(deletion) == []


def test_the_reader_of_a_write_is_the_writer_in_every_context(world):
    """The writer's scope letters do not matter (B writes Procedures and may point at the
    Task it sees); its patient context does."""
    assert check_write(world, caller("B", "system/Procedure.c"),
                       {"resourceType": "Procedure", "basedOn": [ref("Task/t1")]}) is None
    launched = caller("C", "patient/Observation.c", patient="p2")
    for hidden in ("Patient/p1", "Patient/p4"):  # p4: C's patient, outside the launch
        error = check_write(world, launched, {"resourceType": "Observation",
                                              "subject": ref(hidden)})
        assert [i.expression for i in error.issues] == [["Observation.subject"]]
    assert check_write(world, caller("C"), {"resourceType": "Observation",
                                            "subject": ref("Patient/p4")}) is None
    assert check_write(world, launched, {"resourceType": "Observation",
                                         "subject": ref("Patient/p2")}) is None
    assert reference_check.reader_of(launched).scopes.render() == "patient/*.rs"
    both = caller("C", "patient/Observation.c user/Task.u openid")
    assert reference_check.reader_of(both).scopes.render() == "patient/*.rs user/*.rs"
    assert reference_check.reader_of(caller("B", "openid")).scopes.render() == "system/*.rs"


def test_local_targets(world):
    assert reference_check.local_target("Patient/p1", BASE) == ("Patient", "p1")
    assert reference_check.local_target(f"{BASE}/Patient/p1", BASE) == ("Patient", "p1")
    assert reference_check.local_target(f"{BASE}/Patient/p1/_history/2", BASE) == (
        "Patient", "p1")
    assert reference_check.local_target("https://s.test/fhir/Patient/p1",
                                        "https://s.test/fhir/") == ("Patient", "p1")
    assert reference_check.local_target("http://other.test/fhir/Patient/p1", BASE) is None
    assert reference_check.local_target("http://x/Patient/p1", "") is None
    assert reference_check.local_target("#contained", BASE) is None
    assert reference_check.local_target("Nonsense/p1", BASE) is None
    assert reference_check.local_target("urn:uuid:1234", BASE) is None
