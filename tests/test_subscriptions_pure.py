"""Pure parts of Subscriptions: topics, triggers, filters, validation, notification bundles."""

from __future__ import annotations

import copy
import json

import pytest

from fhir_server.errors import FhirError
from subscriptions import notifications as nb
from subscriptions.subscription_rules import filters_match, validate_subscription
from subscriptions.topics import (
    REFERRAL_RECEIVED_TOPIC,
    SAFETY_FLAG_TOPIC,
    SERVICEREQUEST_TOPIC,
    STALLED_CODE_SYSTEM,
    STALLED_TOPIC,
    TASK_TOPIC,
    all_topics,
    basic_resources,
    capability_topic_extensions,
    fired_topics,
)
from tests.reference_data import INFERNO

BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def task(status="requested", **extra):
    t = {"resourceType": "Task", "id": "t1", "meta": {"versionId": "2",
         "lastUpdated": "2026-05-01T10:00:00Z"}, "status": status, "intent": "order",
         "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code",
                              "code": "fulfill"}]},
         "focus": {"reference": "ServiceRequest/sr1"}, "for": {"reference": "Patient/p1"},
         "requester": {"reference": "Organization/clinic-1"},
         "owner": {"reference": "https://ex.org/fhir/Organization/cbo-2"}}
    t.update(extra)
    return t


def sub(criteria=TASK_TOPIC, filters=("Task?requester=Organization/clinic-1",),
        content="id-only", endpoint="https://ehr.example.org/hook", **channel_extra):
    s = {"resourceType": "Subscription", "status": "requested", "criteria": criteria,
         "reason": "test",
         "_criteria": {"extension": [{"url": BP + "backport-filter-criteria", "valueString": f}
                                     for f in filters]},
         "channel": {"type": "rest-hook", "endpoint": endpoint,
                     "payload": "application/fhir+json",
                     "header": ["Authorization: Bearer abc:def"],
                     "_payload": {"extension": [{"url": BP + "backport-payload-content",
                                                 "valueCode": content}]},
                     "extension": [{"url": BP + "backport-heartbeat-period",
                                    "valueUnsignedInt": 60},
                                   {"url": BP + "backport-timeout", "valueUnsignedInt": 5},
                                   {"url": BP + "backport-max-count", "valuePositiveInt": 7}]}}
    s["channel"].update(channel_extra)
    return s


# ---- topics -------------------------------------------------------------------------

def test_shipped_topics_are_basic_wrapped_and_advertised():
    urls = set(all_topics())
    assert urls == {TASK_TOPIC, SERVICEREQUEST_TOPIC, STALLED_TOPIC, SAFETY_FLAG_TOPIC,
                    REFERRAL_RECEIVED_TOPIC}
    for b in basic_resources():
        assert b["resourceType"] == "Basic"
        assert b["code"]["coding"][0] == {"system": "http://hl7.org/fhir/fhir-types",
                                          "code": "SubscriptionTopic"}
        assert b["modifierExtension"][0]["valueCode"] == "active"
    canon = {e["valueCanonical"] for e in capability_topic_extensions()}
    assert canon == urls
    assert all_topics()[TASK_TOPIC].filters["Task"] == {
        "owner", "requester", "status", "code", "_lastUpdated"}
    assert all_topics()[SERVICEREQUEST_TOPIC].filters["ServiceRequest"] == {"_id", "_lastUpdated"}


def test_task_topic_fires_on_create_update_delete_but_not_draft():
    assert {e.topic_url for e in fired_topics(None, task(), "create")} == {
        TASK_TOPIC, REFERRAL_RECEIVED_TOPIC}
    ev = fired_topics(task(), task("accepted"), "update")[0]
    assert (ev.resource_type, ev.resource_id, ev.version) == ("Task", "t1", "2")
    assert ev.additional_context == ("ServiceRequest/sr1", "Patient/p1")
    assert fired_topics(None, task("draft"), "create") == []
    assert fired_topics(task("draft"), task("draft"), "update") == []
    assert [e.interaction for e in fired_topics(task(), None, "delete")] == ["delete"]
    assert fired_topics(None, task(intent="plan"), "create") == []
    assert fired_topics(task(), task("accepted"), "patch")[0].interaction == "update"


def test_referral_received_topic_fires_only_when_a_requested_referral_is_created():
    def fired(previous, current, interaction):
        return REFERRAL_RECEIVED_TOPIC in [e.topic_url for e in fired_topics(
            previous, current, interaction)]

    assert fired(None, task(), "create")
    assert not fired(None, task("draft"), "create")
    assert not fired(task("draft"), task(), "update")  # sent later: the Task topic tells
    assert not fired(task(), task("accepted"), "update")
    assert not fired(None, task(code={"coding": [{"code": "approve"}]}), "create")


def test_open_referral_candidates_can_be_filtered_on():
    from fhir_server.workflow.canonical import EXT_CANDIDATE

    offered = task(extension=[{"url": EXT_CANDIDATE, "valueReference": {
        "reference": "Organization/cbo-a"}}])
    offered.pop("owner")
    for_a = validate_subscription(sub(REFERRAL_RECEIVED_TOPIC, filters=(
        "Task?candidate=Organization/cbo-a,HealthcareService/a-1",)))
    for_b = validate_subscription(sub(REFERRAL_RECEIVED_TOPIC, filters=(
        "Task?candidate=Organization/cbo-b",)))
    assert filters_match(for_a, offered) and not filters_match(for_b, offered)
    assert not filters_match(for_a, task())  # an owned referral offers nobody anything


def test_email_text_leads_with_the_subscriptions_reason():
    from subscriptions.channels import email_text

    def email(reason: str) -> dict:
        body = sub(type="email", endpoint="mailto:a@b.org", content="empty")
        body["reason"] = reason
        return body

    plain = validate_subscription(email(""))
    subject, body = email_text("s1", plain, "event-notification", 3, "https://x.org/fhir")
    assert subject == "FHIR Subscription s1: event-notification"
    assert body.startswith("FHIR Subscription s1") and "https://x.org/fhir" in body
    told = validate_subscription(email(
        "New referrals for Lakeside. Open the workspace: https://x.org/workspace/"))
    subject, body = email_text("s1", told, "event-notification", 3, "https://x.org/fhir")
    assert subject == "New referrals for Lakeside (FHIR Subscription s1: event-notification)"
    assert body.startswith("New referrals for Lakeside. Open the workspace: "
                           "https://x.org/workspace/")


def test_servicerequest_topic_only_update_and_delete():
    sr = {"resourceType": "ServiceRequest", "id": "sr1", "status": "active",
          "subject": {"reference": "Patient/p1"}}
    assert fired_topics(None, sr, "create") == []
    assert [e.topic_url for e in fired_topics(sr, dict(sr, status="revoked"), "update")] == [
        SERVICEREQUEST_TOPIC]
    assert fired_topics(sr, None, "delete")[0].additional_context == ("Patient/p1",)


def test_stalled_topic_fires_once_when_business_status_becomes_stalled():
    stalled = {"coding": [{"system": STALLED_CODE_SYSTEM, "code": "stalled-not-accepted"}]}
    before, after = task("received"), task("received", businessStatus=stalled)
    assert STALLED_TOPIC in [e.topic_url for e in fired_topics(before, after, "update")]
    assert STALLED_TOPIC not in [e.topic_url for e in fired_topics(after, after, "update")]
    assert STALLED_TOPIC not in [e.topic_url for e in fired_topics(before, before, "update")]


def _item9(answer, status="final"):
    return {"resourceType": "Observation", "id": "o9", "status": status,
            "code": {"coding": [{"system": "http://loinc.org", "code": "44260-8"}]},
            "subject": {"reference": "Patient/p1"},
            "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": answer}]}}


def test_safety_flag_topic_on_positive_item9_only():
    urls = lambda p, c, i: [e.topic_url for e in fired_topics(p, c, i)]  # noqa: E731
    assert urls(None, _item9("LA6569-3"), "create") == [SAFETY_FLAG_TOPIC]
    assert urls(None, _item9("LA6568-5"), "create") == []
    assert urls(None, _item9("LA6569-3", "preliminary"), "create") == []
    assert urls(_item9("LA6569-3", "preliminary"), _item9("LA6569-3"), "update") == [
        SAFETY_FLAG_TOPIC]
    assert urls(_item9("LA6568-5"), _item9("LA6570-1"), "update") == [SAFETY_FLAG_TOPIC]
    assert urls(_item9("LA6569-3"), _item9("LA6570-1"), "update") == []  # already flagged


# ---- filters and validation ------------------------------------------------------------

@pytest.mark.parametrize("text", [
    "Task?requester=Organization/clinic-1", "Task.requester=Organization/clinic-1",
    "requester=Organization/clinic-1", "requester=https://ex.org/fhir/Organization/clinic-1",
])
def test_three_filter_syntaxes(text):
    spec = validate_subscription(sub(filters=(text,)))
    base = "https://ex.org/fhir"  # this server: its absolute URLs are its references
    assert filters_match(spec, task(), base)
    assert not filters_match(spec, task(requester={"reference": "Organization/other"}), base)


def test_filters_match_as_a_search_does():
    """An absolute URL names a resource on this server only with this server's base URL
    (as a search does); a bare id matches a reference of any type."""
    spec = validate_subscription(sub(filters=("requester=https://ex.org/fhir/Organization/"
                                              "clinic-1",)))
    assert not filters_match(spec, task(), "https://elsewhere.example/fhir")
    absolute = task(requester={"reference": "https://ex.org/fhir/Organization/clinic-1"})
    assert filters_match(spec, absolute) and filters_match(spec, absolute, "https://x/fhir")
    bare = validate_subscription(sub(filters=("requester=clinic-1",)))
    assert filters_match(bare, task())


def test_filters_are_anded_and_support_tokens_and_dates():
    spec = validate_subscription(sub(filters=(
        "Task?owner=Organization/cbo-2&status=accepted,in-progress",
        "code=http://hl7.org/fhir/CodeSystem/task-code|fulfill",
        "_lastUpdated=ge2026-01-01")))
    base = "https://ex.org/fhir"  # task()'s owner is an absolute URL of this server
    assert filters_match(spec, task("accepted"), base)
    assert not filters_match(spec, task("accepted"))  # a foreign server's Organization
    assert not filters_match(spec, task("requested"), base)
    assert not filters_match(
        spec, task("accepted", meta={"lastUpdated": "2025-12-31T23:00:00Z"}), base)
    spec2 = validate_subscription(sub(filters=("status:not=completed",)))
    assert filters_match(spec2, task("accepted")) and not filters_match(spec2, task("completed"))
    sr_spec = validate_subscription(sub(SERVICEREQUEST_TOPIC, filters=("_id=sr1,sr2",)))
    assert filters_match(sr_spec, {"resourceType": "ServiceRequest", "id": "sr2"})
    assert not filters_match(sr_spec, {"resourceType": "ServiceRequest", "id": "sr3"})


def test_spec_is_normalised():
    spec = validate_subscription(sub())
    assert spec.headers == (("Authorization", "Bearer abc:def"),)
    assert (spec.heartbeat_period, spec.timeout, spec.max_count) == (60, 5, 7)
    assert (spec.content, spec.payload_mime, spec.channel_type) == (
        "id-only", "application/fhir+json", "rest-hook")
    assert type(spec).from_json(json.loads(json.dumps(spec.to_json()))) == spec


def _rejects(resource, fragment, **kw):
    with pytest.raises(FhirError) as info:
        validate_subscription(resource, **kw)
    assert 400 <= info.value.status < 500
    assert fragment in info.value.diagnostics
    assert info.value.issues[0].expression
    return info.value


def test_rejections():
    _rejects(sub("http://example.org/unknown-topic"), "Unknown subscription topic")
    _rejects(sub(filters=("Task?patient=Patient/1",)), "not supported by topic")
    _rejects(sub(filters=("Encounter?patient=Patient/1",)), "not filterable")
    bad = sub()
    bad["_criteria"]["extension"][0]["url"] = (
        "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/"
        "backport-filter-criteria")
    _rejects(bad, "Cross-version")
    _rejects(sub(payload="text/plain"), "Unsupported payload MIME")
    _rejects(sub(payload="application/fhir+json; fhirVersion=5.0"), "fhirVersion")
    _rejects(sub(type="websocket"), "not supported")
    _rejects(sub(endpoint="ftp://ehr.example.org/x"), "http(s)")
    err = _rejects(sub(content="full-resource", endpoint="http://ehr.example.org/x"), "https")
    assert err.issues[0].expression == ["Subscription.channel.payload"]
    assert validate_subscription(sub(content="full-resource", endpoint="http://h/x"),
                                 allow_plain_http_full_resource=True).content == "full-resource"
    _rejects(sub(header=["no colon here"]), "Name: value")
    _rejects(sub(type="email", endpoint="https://x.org"), "mailto")
    assert validate_subscription(sub(type="email", endpoint="mailto:a@b.org")).channel_type == (
        "email")


def test_inferno_cross_version_rejection_sample_and_samples_accepted():
    sample = json.loads((INFERNO / "samples" / "Subscription_id-only.json").read_text())
    sample["criteria"] = TASK_TOPIC
    sample["_criteria"]["extension"][0]["valueString"] = "Task.owner=Organization/123"
    assert validate_subscription(sample).filters[0].param == "owner"
    bad = copy.deepcopy(sample)
    bad["_criteria"] = {"extension": [{
        "url": "http://hl7.org/fhir/5.0/subscriptions-backport/StructureDefinition/"
               "backport-filter-criteria", "valueString": "Encounter.patient=Patient/123"}]}
    _rejects(bad, "Cross-version")


# ---- notification bundles vs the Inferno / IG fixtures ------------------------------

def _shape(bundle):
    """Names and value types of the status parameters, plus entry keys: comparable shape."""
    params = bundle["entry"][0]["resource"]["parameter"]
    return (bundle["type"], [(p["name"], sorted(k for k in p if k != "name")) for p in params],
            [sorted(e) for e in bundle["entry"]])


def _fixture(name):
    return json.loads((INFERNO / name).read_text())


INFO = nb.StatusInfo("123", "http://fhirserver.org/topics/patient-admission", "active", 1)
BASE = "https://fhirserver.org/fhir"


def test_handshake_and_heartbeat_match_fixtures():
    hs = nb.handshake(nb.StatusInfo("123", INFO.topic_url, "requested", 0), BASE)
    assert _shape(hs) == _shape(_fixture("handshake_bundle_example.json"))
    assert hs["entry"][0]["request"] == _fixture("handshake_bundle_example.json")[
        "entry"][0]["request"]
    hb = nb.heartbeat(nb.StatusInfo("123", INFO.topic_url, "active", 2), BASE)
    assert _shape(hb) == _shape(_fixture("heartbeat_bundle_example.json"))
    assert hb["meta"]["profile"] == [nb.NOTIFICATION_PROFILE]


def test_event_notifications_match_fixtures():
    ev = nb.NotificationEvent(1, "2020-05-29T16:44:13.188Z", "Encounter",
                              "86009987-eabe-42bf-8c02-b112b18cb616", "1", "create",
                              resource={"resourceType": "Encounter",
                                        "id": "86009987-eabe-42bf-8c02-b112b18cb616"})
    empty = nb.event_notification(INFO, [ev], BASE, "empty")
    fx = _fixture("empty_notification_bundle_example.json")
    # the IG says topic SHOULD NOT be present for empty; the fixture has it
    fx_params = [p for p in fx["entry"][0]["resource"]["parameter"] if p["name"] != "topic"]
    fx["entry"][0]["resource"]["parameter"] = fx_params
    assert _shape(empty) == _shape(fx)
    full = nb.event_notification(INFO, [ev], BASE, "full-resource")
    fx_full = _fixture("full_resource_notification_bundle_example.json")
    assert _shape(full) == _shape(fx_full)
    assert full["entry"][1]["fullUrl"] == fx_full["entry"][1]["fullUrl"]
    assert full["entry"][1]["request"] == {"method": "POST", "url": "Encounter"}
    focus = full["entry"][0]["resource"]["parameter"][-1]["part"][-1]
    assert focus["valueReference"] == fx_full["entry"][0]["resource"]["parameter"][-1][
        "part"][-1]["valueReference"]
    idonly = nb.event_notification(INFO, [ev], BASE, "id-only")
    assert "resource" not in idonly["entry"][1] and idonly["entry"][1]["fullUrl"]
    for b in (empty, full, idonly):
        assert all("request" in e and "response" in e for e in b["entry"])
        assert b["entry"][0]["request"]["url"].endswith("Subscription/123/$status")


def test_status_searchset_matches_fixture_and_reports_errors():
    info = nb.StatusInfo("123", INFO.topic_url, "error", 5,
                         (("no-response", "endpoint answered HTTP 500"),))
    bundle = nb.status_searchset([info], "https://example.org/fhir")
    fx = _fixture("subscription_status_example.json")
    assert bundle["type"] == fx["type"] == "searchset" and bundle["total"] == 1
    params = {p["name"]: p for p in bundle["entry"][0]["resource"]["parameter"]}
    assert params["subscription"] == fx["entry"][0]["resource"]["parameter"][0]
    assert params["type"]["valueCode"] == "query-status"
    assert params["events-since-subscription-start"]["valueString"] == "5"
    assert params["error"]["valueCodeableConcept"]["coding"][0]["code"] == "no-response"


def test_xml_payload_serialises_the_bundle_as_fhir_xml():
    from subscriptions.channels import serialise

    spec = validate_subscription(sub(payload="application/fhir+xml"))
    body = serialise(nb.heartbeat(INFO, BASE), spec)
    assert body.lstrip().startswith(b"<") and b"<Bundle" in body
    assert b'value="heartbeat"' in body
