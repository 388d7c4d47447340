"""A referral's `$timeline` and outcome in words, shared by the apps: "Lakeside Behavioral
Health accepted the referral", "Dr Amara Okafor (Riverside Family Health Center) sent the
referral to Lakeside Behavioral Health", "Hillside Counseling declined the open referral".

Collect the names first (`want_names`), fetch them with the page's other names in one batch,
then put the events into words (`events_in_words`)."""

from __future__ import annotations

from dataclasses import dataclass

from fhir_server.web import words
from fhir_server.web.names import Names


@dataclass
class Event:
    when: str
    text: str
    reason: str


def timeline_parts(timeline: dict) -> list[dict]:
    """The `event` parameters of a `$timeline` answer, each as {part name: value}."""
    out = []
    for param in (timeline or {}).get("parameter") or []:
        if param.get("name") != "event":
            continue
        parts: dict = {}
        for part in param.get("part") or []:
            value = next((v for k, v in part.items() if k.startswith("value")), None)
            parts[part.get("name")] = value
        out.append(parts)
    return out


def org_in_display(by: dict | None) -> str | None:
    """The `Organization/x` our server writes into the display of a user's stamp."""
    display = (by or {}).get("display") or ""
    if "(Organization/" in display:
        return display.rsplit("(", 1)[1].rstrip(")")
    return None


def want_names(names: Names, parts: list[dict]) -> None:
    """Ask for every name the events will print."""
    for part in parts:
        names.want(part.get("by"))
        names.want(part.get("owner"))
        names.want(part.get("candidate"))
        names.want(org_in_display(part.get("by")))


def who(names: Names, by: dict | None) -> str:
    """Who made a change: a person with their organization, or an organization."""
    if not by:
        return "someone"
    name = names.name(by, "someone")
    org = org_in_display(by)
    if org and by.get("reference", "").startswith(("Practitioner", "PractitionerRole")):
        org_name = names.name(org, "")
        if org_name and not org_name.startswith("(") and org_name not in name:
            return f"{name} ({org_name})"
    return name


VERBS = {"requested": "sent the referral", "accepted": "accepted the referral",
         "rejected": "declined the referral", "cancelled": "cancelled the referral",
         "in-progress": "started care", "on-hold": "put the referral on hold",
         "completed": "completed the referral", "failed": "could not complete the referral",
         "draft": "drafted the referral", "entered-in-error": "marked it entered in error"}


def event_words(names: Names, part: dict) -> Event:
    """One timeline event in words."""
    actor = who(names, part.get("by"))
    when = part.get("time") or ""
    kind = part.get("kind")
    if kind == "stalled":
        text = f"Marked stalled: {words.STALLED.get(part.get('businessStatus'), 'no progress')}"
    elif kind == "unstalled":
        text = "No longer stalled"
    elif kind == "declined":
        text = f"{names.name(part.get('candidate'), 'A candidate')} declined the open referral"
        if actor and actor != "someone":
            text += f" ({actor})"
    else:
        verb = VERBS.get(part.get("status") or "", f"set the status to {part.get('status')}")
        text = f"{actor} {verb}"
        if part.get("status") == "requested" and part.get("owner"):
            text += f" to {names.name(part.get('owner'), 'a provider')}"
        elif part.get("status") == "requested" and part.get("previousStatus") is None:
            text += " as an open referral"
    return Event(when=when, text=text[0].upper() + text[1:] if text else text,
                 reason=part.get("statusReason") or "")


def events_in_words(names: Names, parts: list[dict]) -> list[Event]:
    return [event_words(names, p) for p in parts]


def outcome_words(names: Names, outputs: list[dict]) -> list[dict]:
    """The outcome resources of a referral (its Procedures), in words."""
    out = []
    for ref in outputs:
        resource = names.get(ref)
        if not resource:
            continue
        performed = resource.get("performedDateTime") or (resource.get("performedPeriod")
                                                          or {}).get("start", "")
        out.append({"what": words.concept_text(resource.get("code")) or resource.get(
            "resourceType"), "status": resource.get("status", ""), "when": performed,
            "notes": [n.get("text") for n in resource.get("note") or [] if n.get("text")]})
    return out
