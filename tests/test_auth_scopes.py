"""SMART scope grammar, v1 mapping, interaction mapping, negotiation and granular matching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.auth.granular import in_patient_compartment, matches
from fhir_server.auth.scopes import (
    INTERACTION_LETTER,
    Scope,
    is_subset,
    negotiate,
    parse_scope,
    parse_scopes,
    permits,
)

LAB = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
LAB_OBS = {
    "resourceType": "Observation", "id": "1", "status": "final",
    "subject": {"reference": "Patient/p1"},
    "category": [{"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
        "code": "laboratory"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
}
SURVEY_OBS = {**LAB_OBS, "id": "2", "category": [{"coding": [{
    "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey"}]}]}


@pytest.mark.parametrize("raw, expected", [
    ("patient/Observation.rs", Scope("patient", "Observation", "rs")),
    ("user/*.cruds", Scope("user", "*", "cruds")),
    ("system/Task.rsu", Scope("system", "Task", "rus")),  # normalised order
    ("patient/*.read", Scope("patient", "*", "rs", (), True)),
    ("user/Task.write", Scope("user", "Task", "cud", (), True)),
    ("system/*.*", Scope("system", "*", "cruds", (), True)),
    (f"patient/Observation.rs?{LAB}", Scope("patient", "Observation", "rs", (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
    ))),
    ("user/Task.r?status=requested&owner=Organization/1",
     Scope("user", "Task", "r", (("status", "requested"), ("owner", "Organization/1")))),
])
def test_parse_valid(raw, expected):
    assert parse_scope(raw) == expected


@pytest.mark.parametrize("raw", [
    "patient/Observation.", "patient/Observation.x", "patient/Observation.rr",
    "doctor/Observation.rs", "patient/observation.rs", "patient/Observation.rs?",
    "patient/Observation.rs?category", "patient/Observation.rs?=x", "Observation.rs",
    "patient/Observation.cruds.read",
])
def test_parse_invalid(raw):
    assert parse_scope(raw) is None
    assert raw in parse_scopes(raw).unknown


def test_parse_scopes_splits_context_scopes():
    s = parse_scopes("openid fhirUser launch/patient offline_access patient/*.rs bogus")
    assert s.other == {"openid", "fhirUser", "launch/patient", "offline_access"}
    assert s.resource == (Scope("patient", "*", "rs"),)
    assert s.unknown == ("bogus",)


def test_render_keeps_v1_form_and_orders_context_first():
    s = parse_scopes("patient/*.read openid launch user/Task.cu")
    assert s.render() == "launch openid patient/*.read user/Task.cu"


def test_context_scopes_render_in_launch_order_then_alphabetically():
    s = parse_scopes("profile fhirUser openid launch/encounter launch/patient launch "
                     "online_access offline_access launch/other")
    assert s.render() == ("launch launch/patient launch/encounter openid fhirUser profile "
                          "launch/other offline_access online_access")
    assert s.has("openid") and not s.has("patient/*.rs")
    assert parse_scopes("user/Task.r patient/Patient.r").contexts() == {"user", "patient"}


def test_scope_render_and_type_cover():
    assert Scope("user", "Task", "rs", (), True).render() == "user/Task.read"
    assert Scope("user", "Task", "r", (), True).render() == "user/Task.r"
    assert Scope("user", "Task", "rs", (("status", "x"),), True).render() == (
        "user/Task.rs?status=x")
    granular = Scope("user", "Task", "rs", (("status", "x"), ("owner", "Organization/1")))
    assert granular.render() == "user/Task.rs?status=x&owner=Organization/1"
    assert Scope("user", "*", "r").covers_type("Task")
    assert Scope("user", "Task", "r").covers_type(None)
    assert not Scope("user", "Task", "r").covers_type("Patient")


@pytest.mark.parametrize("raw", ["user/Task.rr", "user/Task.rs?", "user/Task.rs?status",
                                 "user/Task.rs?=x", "user/Task.rs?status=", "user/task.rs",
                                 "user/Task.x", "other/Task.rs", "user/Task.read?status=x"])
def test_scope_grammar_rejects(raw):
    assert parse_scope(raw) is None


def test_interaction_table_matches_smart():
    assert {k for k, v in INTERACTION_LETTER.items() if v == "r"} == {
        "read", "vread", "history-instance"}
    assert {k for k, v in INTERACTION_LETTER.items() if v == "u"} == {"update", "patch"}
    assert {k for k, v in INTERACTION_LETTER.items() if v == "s"} == {
        "search-type", "history-type", "search-system", "history-system"}
    assert INTERACTION_LETTER["create"] == "c" and INTERACTION_LETTER["delete"] == "d"


@pytest.mark.parametrize("scope, interaction, res_type, allowed", [
    ("patient/*.read", "read", "Observation", True),
    ("patient/*.read", "search-type", "Observation", True),
    ("patient/*.read", "create", "Observation", False),
    ("user/Task.write", "update", "Task", True),
    ("user/Task.write", "patch", "Task", True),
    ("user/Task.write", "read", "Task", False),  # write does not imply read
    ("user/Task.cu", "delete", "Task", False),
    ("system/Task.rs", "read", "ServiceRequest", False),
    ("system/*.s", "search-system", None, True),
    ("system/*.s", "history-type", "Task", True),
    ("system/*.r", "history-instance", "Task", True),
    ("system/*.r", "history-type", "Task", False),
])
def test_permits_type_level(scope, interaction, res_type, allowed):
    assert permits(parse_scopes(scope), interaction, res_type) is allowed


def test_union_of_scopes():
    s = parse_scopes("user/Task.r user/Task.u system/ServiceRequest.s")
    assert permits(s, "read", "Task") and permits(s, "update", "Task")
    assert permits(s, "search-type", "ServiceRequest")
    assert not permits(s, "search-type", "Task")


def test_granular_scope_with_resource():
    s = parse_scopes(f"patient/Observation.rs?{LAB}")
    assert permits(s, "read", "Observation")  # type level: the search will be narrowed
    assert permits(s, "read", "Observation", LAB_OBS)
    assert not permits(s, "read", "Observation", SURVEY_OBS)


def test_several_granular_scopes_are_or():
    s = parse_scopes(
        f"patient/Observation.rs?{LAB} "
        "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/"
        "observation-category|survey")
    assert permits(s, "read", "Observation", LAB_OBS)
    assert permits(s, "read", "Observation", SURVEY_OBS)


@pytest.mark.parametrize("params, expected", [
    ((("category", "laboratory"),), True),
    ((("category", "|laboratory"),), False),  # the coding has a system
    ((("category", "http://terminology.hl7.org/CodeSystem/observation-category|"),), True),
    ((("code", "http://loinc.org|718-7"), ("category", "laboratory")), True),
    ((("code", "http://loinc.org|718-7"), ("category", "survey")), False),
    ((("code", "http://loinc.org|1,http://loinc.org|718-7"),), True),
    ((("subject", "Patient/p1"),), True),
    ((("subject", "p1"),), True),
    ((("subject", "Patient/p2"),), False),
    ((("status", "final"),), True),
    ((("_id", "1"),), True),
    ((("status:not", "final"),), False),  # every modifier a search supports
    ((("status:not", "amended"),), True),
    ((("subject:Patient", "p1"),), True),
    ((("value-quantity:missing", "true"),), True),  # and every parameter type
    ((("value-quantity", "5"),), False),
    ((("code:in", "http://vs"),), False),  # needs a stored ValueSet: fails closed
    ((("subject.name", "x"),), False),  # chains need other resources: fail closed
    ((("no-such-param", "x"),), False),  # unknown: fails closed
])
def test_granular_matching(params, expected):
    assert matches(LAB_OBS, params) is expected


def test_patient_compartment():
    assert in_patient_compartment(LAB_OBS, "p1")
    assert not in_patient_compartment(LAB_OBS, "p2")
    assert in_patient_compartment({"resourceType": "Patient", "id": "p1"}, "p1")
    task = {"resourceType": "Task", "id": "t", "for": {"reference": "Patient/p1"}}
    assert in_patient_compartment(task, "p1")
    assert not in_patient_compartment({"resourceType": "Organization", "id": "o"}, "p1")


def test_negotiate_clamps_and_merges():
    allowed = parse_scopes("launch/patient openid system/Task.rsu system/*.s patient/Patient.r")
    requested = parse_scopes(
        "openid fhirUser system/Task.cruds system/Observation.rs patient/*.read")
    granted = negotiate(requested, allowed)
    assert granted.render() == (
        "openid system/Task.rus system/Observation.s patient/Patient.r")


def test_negotiate_ands_granular_parameters():
    allowed = parse_scopes("patient/Observation.rs?category=survey")
    granted = negotiate(parse_scopes("patient/Observation.r?code=x"), allowed)
    assert granted.resource == (
        Scope("patient", "Observation", "r", (("code", "x"), ("category", "survey"))),)


@pytest.mark.parametrize("requested, allowed", [
    ("system/Task.c", "system/Task.rs"),
    ("system/Task.read", "system/Task.write"),
    ("system/*.read", "system/Task.cud"),
    ("user/Task.rs?status=x", "user/Task.c?status=y"),
    ("system/Task.rs", "patient/Task.rs"),
    ("system/Task.rs", "system/Patient.rs"),
])
def test_negotiate_without_overlap_grants_nothing(requested, allowed):
    granted = negotiate(parse_scopes(f"openid {requested}"), parse_scopes(allowed))
    assert granted.resource == () and granted.render() == ""


def test_negotiate_keeps_v1_form_and_wildcards():
    granted = negotiate(parse_scopes("system/*.read launch"), parse_scopes("system/*.* launch"))
    assert granted.render() == "launch system/*.read"
    narrowed = negotiate(parse_scopes("system/*.*"), parse_scopes("system/Task.read"))
    assert narrowed.render() == "system/Task.read"
    other_context_first = negotiate(parse_scopes("system/Task.rs"),
                                    parse_scopes("user/Task.rs patient/*.r system/Task.rs"))
    assert other_context_first.render() == "system/Task.rs"
    other_type_first = negotiate(parse_scopes("system/Task.rs"),
                                 parse_scopes("system/Patient.rs system/Task.r"))
    assert other_type_first.render() == "system/Task.r"
    no_letters_first = negotiate(parse_scopes("system/Task.c"),
                                 parse_scopes("system/Task.r system/Task.c"))
    assert no_letters_first.render() == "system/Task.c"
    merged = negotiate(parse_scopes("system/Task.r system/Task.s"),
                       parse_scopes("system/Task.rs"))
    assert merged.resource == (Scope("system", "Task", "rs"),)


def test_is_subset_for_refresh():
    original = parse_scopes("offline_access patient/*.rs user/Task.cu")
    assert is_subset(parse_scopes("patient/Observation.r"), original)
    assert is_subset(parse_scopes("patient/Observation.r?category=x"), original)
    assert is_subset(original, original)
    assert not is_subset(parse_scopes("patient/*.rsd"), original)
    assert not is_subset(parse_scopes("user/Task.r"), original)
    assert not is_subset(parse_scopes("openid"), original)
    assert not is_subset(parse_scopes("garbage"), original)
    granular_only = parse_scopes("patient/Observation.rs?category=x")
    assert not is_subset(parse_scopes("patient/Observation.rs"), granular_only)


_TYPES = ["Task", "ServiceRequest", "Observation", "*"]
_scope_text = st.builds(
    lambda ctx, typ, letters, granular: f"{ctx}/{typ}.{letters}{granular}",
    st.sampled_from(["patient", "user", "system"]),
    st.sampled_from(_TYPES),
    st.sets(st.sampled_from("cruds"), min_size=1).map(
        lambda s: "".join(ch for ch in "cruds" if ch in s)),
    st.sampled_from(["", "?status=final", "?category=survey"]),
)
_scope_set = st.lists(_scope_text, max_size=4).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(requested=_scope_set, allowed=_scope_set,
       interaction=st.sampled_from(sorted(INTERACTION_LETTER)),
       res_type=st.sampled_from(_TYPES[:-1]))
def test_negotiation_never_widens(requested, allowed, interaction, res_type):
    granted = negotiate(parse_scopes(requested), parse_scopes(allowed))
    for scope in granted.resource:  # never an empty scope such as 'system/Task.'
        assert scope.letters and parse_scope(scope.render()) is not None
    assert is_subset(granted, parse_scopes(allowed))
    assert is_subset(granted, parse_scopes(requested)) or "*" in requested
    for resource in (LAB_OBS, {**SURVEY_OBS, "status": "amended"}, None):
        if resource is not None and res_type != "Observation":
            continue
        if permits(granted, interaction, res_type, resource):
            assert permits(parse_scopes(allowed), interaction, res_type, resource)
