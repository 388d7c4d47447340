"""The tracker: every referral of the user's organization (what the access policy lets the
user see), filters, the "needs attention" view, and one referral's timeline and outcome in
words. Lists refresh themselves (`data-refresh-url`, polled every `refresh_seconds` >= 10 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, request

from fhir_server.web import words
from fhir_server.web.api import ApiError, entries, next_link
from fhir_server.web.apps import current, render, signed_in
from fhir_server.web.clinician.follow_ups import follow_ups, follow_ups_in
from fhir_server.web.clinician.referrals import ReferralRow, referral_rows
from fhir_server.web.clinician.summary import REFERRAL_TASK_CODE
from fhir_server.web.filters import ReferralFilters, page_params
from fhir_server.web.names import Names
from fhir_server.web.timeline import events_in_words, outcome_words, timeline_parts, want_names
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
class Filters(ReferralFilters):
    STATUSES = STATUSES
    provider: str = ""

    def search(self) -> list[tuple[str, str]]:
        params = [("code", REFERRAL_TASK_CODE), ("_sort", "-_lastUpdated"),
                  ("_count", str(PAGE_SIZE)), *INCLUDES,
                  *self.common_params("patient:Patient.name")]
        if self.provider:
            params.append(("owner:Organization.name", self.provider))
        return params


def _version(rows: list[ReferralRow]) -> str:
    return max((r.updated for r in rows), default="") + f"/{len(rows)}"


def add_tracker_views(bp: Blueprint) -> None:
    """Register the tracker pages on the app's blueprint."""

    @bp.get("/referrals")
    @signed_in
    def tracker() -> Response:
        filters = Filters.from_args()
        params = page_params(request.args.get("page", ""), ALLOWED_PAGE_PARAMS) \
            or filters.search()
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


def load_referral(task_id: str) -> dict:
    """The referral Task, its request, patient, timeline and outcome, in words."""
    api = current().api
    task = api.read(f"Task/{task_id}")
    focus = task.get("focus")
    parts = timeline_parts(api.operation(f"Task/{task_id}/$timeline"))
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
    want_names(names, parts)
    names.fetch()
    rows = referral_rows(names, [task])
    sr = names.get(focus) or {}
    return {"task": task, "row": rows[0], "sr": sr,
            "follow_ups": follow_ups(api, [task_id]).get(task_id, []),
            "events": events_in_words(names, parts),
            "outcome": outcome_words(names, outputs), "version": _version(rows),
            "patient_id": rows[0].patient_id, "notes": [n.get("text") for n in
                                                       sr.get("note") or [] if n.get("text")]}
