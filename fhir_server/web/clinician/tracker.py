"""The tracker: every referral of the user's organization (what the access policy lets the
user see), filters, the "needs attention" view, and one referral's timeline and outcome in
words. Lists refresh themselves (`data-refresh-url`, polled every `refresh_seconds` >= 10 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from flask import Blueprint, Response, request

from fhir_server.web import words
from fhir_server.web.api import ApiError, entries, next_link, operation_parts
from fhir_server.web.apps import current, render, signed_in
from fhir_server.web.clinician.follow_ups import follow_ups, follow_ups_in
from fhir_server.web.clinician.referrals import ReferralRow, referral_rows
from fhir_server.web.clinician.summary import REFERRAL_TASK_CODE
from fhir_server.web.names import Names
from fhir_server.workflow.canonical import STALLED_SYSTEM

STATUSES = ("requested", "accepted", "in-progress", "on-hold", "completed", "rejected",
            "cancelled", "failed")
PAGE_SIZE = 25
# names and follow-up screenings (workflow/OUTCOMES.md), same query
INCLUDES = (("_include", "Task:owner"), ("_include", "Task:patient"),
            ("_revinclude", "Task:part-of"))
ALLOWED_PAGE_PARAMS = frozenset({"code", "status", "priority", "owner:Organization.name",
                                 "_include", "_revinclude",
                                 "patient:Patient.name", "authored-on", "_sort", "_count",
                                 "_cursor", "_offset", "_page", "_after", "_before"})


@dataclass
class Filters:
    status: str = ""
    priority: str = ""
    provider: str = ""
    patient: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_args(cls) -> Filters:
        args = request.args
        return cls(status=args.get("status", "") if args.get("status") in STATUSES else "",
                   priority=args.get("priority", "") if args.get("priority") in
                   words.PRIORITY else "",
                   provider=args.get("provider", "").strip()[:100],
                   patient=args.get("patient", "").strip()[:100],
                   since=_day(args.get("since", "")), until=_day(args.get("until", "")))

    def search(self) -> list[tuple[str, str]]:
        params = [("code", REFERRAL_TASK_CODE), ("_sort", "-_lastUpdated"),
                  ("_count", str(PAGE_SIZE)), *INCLUDES]
        if self.status:
            params.append(("status", self.status))
        if self.priority:
            params.append(("priority", self.priority))
        if self.provider:
            params.append(("owner:Organization.name", self.provider))
        if self.patient:
            params.append(("patient:Patient.name", self.patient))
        if self.since:
            params.append(("authored-on", f"ge{self.since}"))
        if self.until:
            params.append(("authored-on", f"le{self.until}"))
        return params

    @property
    def active(self) -> bool:
        return any(self.__dict__.values())

    def query(self) -> str:
        return urlencode({k: v for k, v in self.__dict__.items() if v})


def _day(value: str) -> str:
    return value if words.parse_time(value) is not None and len(value) == 10 else ""


def _page_params(page: str) -> list[tuple[str, str]] | None:
    """The search parameters of a next-page link (only Task search parameters we use)."""
    pairs = parse_qsl(urlsplit(page).query, keep_blank_values=True)
    if not pairs or any(k not in ALLOWED_PAGE_PARAMS for k, _ in pairs):
        return None
    return pairs


def _version(rows: list[ReferralRow]) -> str:
    return max((r.updated for r in rows), default="") + f"/{len(rows)}"


def add_tracker_views(bp: Blueprint) -> None:
    """Register the tracker pages on the app's blueprint."""

    @bp.get("/referrals")
    @signed_in
    def tracker() -> Response:
        filters = Filters.from_args()
        params = _page_params(request.args.get("page", "")) or filters.search()
        api = current().api
        bundle = api.search("Task", params)
        included = entries(bundle, "include")
        rows = referral_rows(_names_with(included), entries(bundle))
        screenings = follow_ups_in(included, [r.id for r in rows])
        more = next_link(bundle)
        page = ("?" + urlsplit(more).query) if more else ""
        template = "clinician/_tracker_rows.html" if request.headers.get("X-Refresh") \
            else "clinician/tracker.html"
        return render(template, rows=rows, follow_ups=screenings, filters=filters,
                      statuses=STATUSES,
                      priorities=list(words.PRIORITY.items()), next_page=page,
                      version=_version(rows), refresh=current().config.refresh_seconds,
                      refresh_url=request.full_path)

    @bp.get("/referrals/attention")
    @signed_in
    def attention() -> Response:
        api = current().api
        base = [("code", REFERRAL_TASK_CODE), ("_sort", "-_lastUpdated"), ("_count", "50"),
                *INCLUDES]
        stalled = ",".join(f"{STALLED_SYSTEM}|{c}" for c in words.STALLED)
        searches = [[*base, ("status", "rejected,failed")], [*base, ("business-status", stalled)],
                    [*base, ("status", "requested"), ("priority", "stat,asap,urgent")]]
        found: dict[str, dict] = {}
        included: list[dict] = []
        for answer in api.batch(["Task?" + urlencode(s) for s in searches]):
            if isinstance(answer, ApiError):
                raise answer
            included += entries(answer, "include")
            for task in entries(answer):
                found.setdefault(str(task.get("id")), task)
        tasks = sorted(found.values(), key=lambda t: (t.get("meta") or {}).get(
            "lastUpdated", ""), reverse=True)
        rows = [r for r in referral_rows(_names_with(included), tasks) if r.attention]
        template = "clinician/_attention_rows.html" if request.headers.get("X-Refresh") \
            else "clinician/attention.html"
        return render(template, rows=rows, version=_version(rows),
                      refresh=current().config.refresh_seconds, refresh_url=request.full_path)

    @bp.get("/referrals/<task_id>")
    @signed_in
    def referral(task_id: str) -> Response:
        detail = load_referral(task_id)
        here = current()
        sent = here.session.data.get("sent")
        if isinstance(sent, dict) and sent.get("task") == task_id:
            detail["sent"] = sent
            here.session.data.pop("sent", None)
            here.session.changed = True
        template = "clinician/_referral_body.html" if request.headers.get("X-Refresh") \
            else "clinician/referral.html"
        return render(template, refresh=here.config.refresh_seconds,
                      refresh_url=request.path, **detail)


def _names_with(resources: list[dict]) -> Names:
    """A name resolver that already knows the resources a search included."""
    names = current().names()
    for resource in resources:
        names.know(resource)
    return names


@dataclass
class Event:
    when: str
    text: str
    reason: str


def load_referral(task_id: str) -> dict:
    """The referral Task, its request, patient, timeline and outcome, in words."""
    api = current().api
    task = api.read(f"Task/{task_id}")
    focus = task.get("focus")
    timeline = api.operation(f"Task/{task_id}/$timeline")
    names = current().names()
    names.know(task)
    names.want(task.get("for"))
    names.want(task.get("owner"))
    names.want(task.get("requester"))
    names.want(focus)
    outputs = [o.get("valueReference") for o in task.get("output") or []
               if isinstance(o.get("valueReference"), dict)]
    for ref in outputs:
        names.want(ref)
    events = operation_parts(timeline, "event")
    for part in events:
        names.want(part.get("by"))
        names.want(part.get("owner"))
        names.want(_org_in_display(part.get("by")))
    names.fetch()
    rows = referral_rows(names, [task])
    sr = names.get(focus) or {}
    return {"task": task, "row": rows[0], "sr": sr,
            "follow_ups": follow_ups(api, [task_id]).get(task_id, []),
            "events": [_event_words(names, p) for p in events],
            "outcome": _outcome(names, outputs), "version": _version(rows),
            "patient_id": rows[0].patient_id, "notes": [n.get("text") for n in
                                                       sr.get("note") or [] if n.get("text")]}


def _org_in_display(by: dict | None) -> str | None:
    """The `Organization/x` our server writes into the display of a user's stamp."""
    display = (by or {}).get("display") or ""
    if "(Organization/" in display:
        return display.rsplit("(", 1)[1].rstrip(")")
    return None


def _who(names: Names, by: dict | None) -> str:
    if not by:
        return "someone"
    who = names.name(by, "someone")
    org = _org_in_display(by)
    if org and by.get("reference", "").startswith(("Practitioner", "PractitionerRole")):
        org_name = names.name(org, "")
        if org_name and not org_name.startswith("(") and org_name not in who:
            return f"{who} ({org_name})"
    return who


VERBS = {"requested": "sent the referral", "accepted": "accepted the referral",
         "rejected": "declined the referral", "cancelled": "cancelled the referral",
         "in-progress": "started care", "on-hold": "put the referral on hold",
         "completed": "completed the referral", "failed": "could not complete the referral",
         "draft": "drafted the referral", "entered-in-error": "marked it entered in error"}


def _event_words(names: Names, part: dict) -> Event:
    who = _who(names, part.get("by"))
    when = part.get("time") or ""
    kind = part.get("kind")
    if kind == "stalled":
        text = f"Marked stalled: {words.STALLED.get(part.get('businessStatus'), 'no progress')}"
        who = ""
    elif kind == "unstalled":
        text = "No longer stalled"
        who = ""
    else:
        verb = VERBS.get(part.get("status") or "", f"set the status to {part.get('status')}")
        text = f"{who} {verb}"
        if part.get("status") == "requested" and part.get("owner"):
            text += f" to {names.name(part.get('owner'), 'a provider')}"
    return Event(when=when, text=text[0].upper() + text[1:] if text else text,
                 reason=part.get("statusReason") or "")


def _outcome(names: Names, outputs: list[dict]) -> list[dict]:
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
