"""Subscription topics: the shipped Basic-wrapped SubscriptionTopics and trigger evaluation.

Topics live as R4 `Basic` resources (backport IG 1.2 representation) in `data/topic-*.json`.
They are parsed once into `Topic` objects. `fired_topics()` is pure: it decides, from the
previous and current state of a resource and the interaction, which topics fired, following
the R5 `SubscriptionTopic.resourceTrigger` semantics (supportedInteraction, queryCriteria with
resultForCreate / resultForDelete / requireBoth, and fhirPathCriteria with %previous/%current).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from fhir_server.search import match

DATA_DIR = Path(__file__).resolve().parent / "data"
V5 = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic."
V43 = "http://hl7.org/fhir/4.3/StructureDefinition/extension-SubscriptionTopic."
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
OWN_CANONICAL_BASE = "http://mh-referral.example.org/fhir"

TASK_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Task"
SERVICEREQUEST_TOPIC = "http://hl7.org/fhir/us/sdoh-clinicalcare/SubscriptionTopic/Servicerequest"
STALLED_TOPIC = OWN_CANONICAL_BASE + "/SubscriptionTopic/referral-stalled"
SAFETY_FLAG_TOPIC = OWN_CANONICAL_BASE + "/SubscriptionTopic/screening-safety-flag"
REFERRAL_RECEIVED_TOPIC = OWN_CANONICAL_BASE + "/SubscriptionTopic/referral-received"
STALLED_CODE_SYSTEM = OWN_CANONICAL_BASE + "/CodeSystem/referral-business-status"
TOPIC_CANONICAL_EXT = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "capabilitystatement-subscriptiontopic-canonical"
)
BACKPORT_SUBSCRIPTION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"
)
INTERACTIONS = ("create", "update", "delete")

# Include parameters of notificationShape -> element holding the reference.
_INCLUDE_PATHS = {
    "Task:focus": "focus",
    "Task:patient": "for",
    "ServiceRequest:patient": "subject",
    "Observation:patient": "subject",
}


@dataclass(frozen=True)
class Trigger:
    """One resourceTrigger of a topic."""

    resource_type: str
    interactions: frozenset[str]
    previous: str | None = None
    current: str | None = None
    result_for_create: bool = True
    result_for_delete: bool = False
    require_both: bool = False
    fhirpath: str | None = None


@dataclass(frozen=True)
class Topic:
    """A parsed SubscriptionTopic."""

    url: str
    version: str
    title: str
    triggers: tuple[Trigger, ...]
    filters: dict[str, frozenset[str]]  # resource type -> allowed filter parameters
    includes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    basic: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def resource_types(self) -> frozenset[str]:
        return frozenset(t.resource_type for t in self.triggers)


@dataclass(frozen=True)
class TopicEvent:
    """A topic that fired for one resource change."""

    topic_url: str
    resource_type: str
    resource_id: str
    version: str | None
    interaction: str
    additional_context: tuple[str, ...] = ()


def _sub(ext: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in ext.get("extension", []) if e.get("url") == name]


def _value(ext: dict[str, Any]) -> Any:
    return next((v for k, v in ext.items() if k.startswith("value")), None)


def _type_of(uri: str) -> str:
    return uri[len(SD_PREFIX):] if uri.startswith(SD_PREFIX) else uri


def parse_topic(basic: dict[str, Any]) -> Topic:
    """Parse a Basic-wrapped R4 SubscriptionTopic into a Topic."""
    top = {e["url"]: _value(e) for e in basic.get("extension", []) if e["url"].startswith(V5)}
    triggers: list[Trigger] = []
    filters: dict[str, set[str]] = {}
    includes: dict[str, tuple[str, ...]] = {}
    for ext in basic.get("extension", []):
        url = ext["url"]
        if url.endswith("SubscriptionTopic.resourceTrigger"):
            triggers.append(_parse_trigger(ext))
        elif url.endswith("SubscriptionTopic.canFilterBy"):
            res = _type_of(_value(_sub(ext, "resource")[0]))
            filters.setdefault(res, set()).add(_value(_sub(ext, "filterParameter")[0]))
        elif url.endswith("SubscriptionTopic.notificationShape"):
            res = _type_of(_value(_sub(ext, "resource")[0]))
            includes[res] = tuple(_value(i) for i in _sub(ext, "include"))
    return Topic(
        url=top[V5 + "url"],
        version=top.get(V5 + "version", ""),
        title=top.get(V5 + "title", ""),
        triggers=tuple(triggers),
        filters={k: frozenset(v) for k, v in filters.items()},
        includes=includes,
        basic=basic,
    )


def _parse_trigger(ext: dict[str, Any]) -> Trigger:
    qc = {e["url"]: _value(e) for q in _sub(ext, "queryCriteria") for e in q["extension"]}
    fp = _sub(ext, "fhirPathCriteria")
    return Trigger(
        resource_type=_type_of(_value(_sub(ext, "resource")[0])),
        interactions=frozenset(_value(e) for e in _sub(ext, "supportedInteraction")),
        previous=qc.get("previous"),
        current=qc.get("current"),
        result_for_create=qc.get("resultForCreate", "test-passes") == "test-passes",
        result_for_delete=qc.get("resultForDelete", "test-fails") == "test-passes",
        require_both=bool(qc.get("requireBoth", False)),
        fhirpath=_value(fp[0]) if fp else None,
    )


@lru_cache(maxsize=1)
def all_topics() -> dict[str, Topic]:
    """Every topic this server supports, keyed by canonical URL."""
    out: dict[str, Topic] = {}
    for path in sorted(DATA_DIR.glob("topic-*.json")):
        topic = parse_topic(json.loads(path.read_text(encoding="utf-8")))
        out[topic.url] = topic
    return out


def get_topic(url: str) -> Topic | None:
    """The topic with this canonical URL (a `|version` suffix is accepted), or None."""
    base, _, version = url.partition("|")
    topic = all_topics().get(base)
    if topic is None or (version and version != topic.version):
        return None
    return topic


def basic_resources() -> list[dict[str, Any]]:
    """The Basic-wrapped SubscriptionTopics, for seeding `Basic?code=...|SubscriptionTopic`."""
    return [json.loads(json.dumps(t.basic)) for t in all_topics().values()]


def capability_topic_extensions() -> list[dict[str, Any]]:
    """Extensions for CapabilityStatement.rest.resource[type=Subscription]."""
    return [{"url": TOPIC_CANONICAL_EXT, "valueCanonical": url} for url in all_topics()]


def topics_for_type(resource_type: str) -> list[Topic]:
    """Topics with at least one trigger on this resource type."""
    return [t for t in all_topics().values() if resource_type in t.resource_types]


@lru_cache(maxsize=64)
def _compiled_fhirpath(expr: str) -> Callable[..., list[Any]]:
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    return fp_compile(expr, model=models["r4"])


def _query_result(res_type: str, criteria: str | None,
                  resource: dict[str, Any] | match.Indexed | None, default: bool) -> bool:
    if criteria is None:
        return True
    if resource is None:
        return default
    return match.matches(resource, match.criteria(res_type, criteria))


def _plain(resource: dict[str, Any] | match.Indexed | None) -> dict[str, Any] | None:
    return resource.resource if isinstance(resource, match.Indexed) else resource


def trigger_fires(
    trigger: Trigger,
    previous: dict[str, Any] | match.Indexed | None,
    current: dict[str, Any] | match.Indexed | None,
    interaction: str,
) -> bool:
    """Whether one resourceTrigger fires for this change (R5 resourceTrigger semantics).
    `previous` / `current` may come with their index values (`match.Indexed`)."""
    if interaction not in trigger.interactions:
        return False
    subject = _plain(current if current is not None else previous)
    if subject is None or subject.get("resourceType") != trigger.resource_type:
        return False
    if trigger.previous is not None or trigger.current is not None:
        prev_ok = _query_result(
            trigger.resource_type, trigger.previous,
            previous if interaction != "create" else None,
            trigger.result_for_create,
        )
        cur_ok = _query_result(
            trigger.resource_type, trigger.current,
            current if interaction != "delete" else None,
            trigger.result_for_delete,
        )
        both_defined = trigger.previous is not None and trigger.current is not None
        if both_defined and not trigger.require_both:
            ok = prev_ok or cur_ok
        else:
            ok = prev_ok and cur_ok
        if not ok:
            return False
    if trigger.fhirpath:
        fn = _compiled_fhirpath(trigger.fhirpath)
        result = fn(subject, {"previous": _plain(previous), "current": _plain(current)})
        if result != [True]:
            return False
    return True


def additional_context(topic: Topic, resource: dict[str, Any]) -> tuple[str, ...]:
    """References named by the topic's notificationShape includes (relative or absolute)."""
    refs: list[str] = []
    for inc in topic.includes.get(resource.get("resourceType", ""), ()):
        path = _INCLUDE_PATHS.get(inc)
        if not path:
            continue
        value = resource.get(path)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict) and isinstance(item.get("reference"), str):
                if not item["reference"].startswith("#") and item["reference"] not in refs:
                    refs.append(item["reference"])
    return tuple(refs)


def fired_topics(
    previous: dict[str, Any] | match.Indexed | None,
    current: dict[str, Any] | match.Indexed | None,
    interaction: str,
) -> list[TopicEvent]:
    """The topics fired by one resource change. `interaction` is create | update | delete.

    `patch` counts as `update`. For a delete, `current` is None and `previous` is the last
    version. Pure: no I/O.
    """
    interaction = "update" if interaction == "patch" else interaction
    if interaction not in INTERACTIONS:
        raise ValueError(f"unknown interaction {interaction!r}")
    subject = _plain(current if current is not None else previous)
    if subject is None:
        return []
    res_type = subject.get("resourceType", "")
    out: list[TopicEvent] = []
    watching = topics_for_type(res_type)
    # index values extracted (once) for every trigger's query criteria
    before = match.indexed(previous) if previous is not None else None
    after = match.indexed(current) if current is not None else None
    for topic in watching:
        if any(trigger_fires(t, before, after, interaction) for t in topic.triggers):
            out.append(
                TopicEvent(
                    topic_url=topic.url,
                    resource_type=res_type,
                    resource_id=str(subject.get("id", "")),
                    version=(subject.get("meta") or {}).get("versionId"),
                    interaction=interaction,
                    additional_context=additional_context(topic, subject),
                )
            )
    return out
