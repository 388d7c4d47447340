"""The workspace's pages: the queue, a referral with its actions, redirecting through
`$match`, capacity, my numbers and the new-referral e-mail setting."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime

from flask import Blueprint, Response, redirect, request, url_for

from fhir_server.web.api import ApiError
from fhir_server.web.apps import current, error_page, render, signed_in
from fhir_server.web.clinician.care import find_providers
from fhir_server.web.forms import FieldMap, FormState, new_key, valid_key
from fhir_server.web.workspace import actions as act
from fhir_server.web.workspace.capacity import add_capacity_views
from fhir_server.web.workspace.detail import load_detail
from fhir_server.web.workspace.intake import add_settings_views
from fhir_server.web.workspace.numbers import add_numbers_views
from fhir_server.web.workspace.queue import Filters, Us, load_queue, load_us
from fhir_server.web.workspace.rows import (
    STATE_ORDER,
    STATUS_WORDS,
    is_offer,
    policy_from,
    work_rows,
)

REDIRECT_FIELDS = FieldMap(((r"target", "redirect_service"), (r"reason", "redirect_reason")))
SEEN_OFFERS = 30  # open referrals remembered per session, to say "withdrawn" when they go


US_TTL = 300.0  # seconds the organization's service list is kept in the session
KEPT_SERVICES = 20  # more than that: read every time


def us_or_none(fresh: bool = False) -> Us | None:
    """The signed-in user's organization and its services (None: no organization). The
    service ids are kept in the session for a few minutes (they change rarely); `fresh`
    reads the services themselves."""
    here = current()
    if not here.user.organization:
        return None
    kept = here.session.data.get("us")
    if not fresh and isinstance(kept, dict) and time.time() - kept.get("at", 0) < US_TTL:
        return Us(here.user.organization, here.user.organization_name,
                  [{"resourceType": "HealthcareService", "id": i} for i in kept["services"]])
    us = load_us(here.api, here.user.organization, here.user.organization_name)
    if len(us.services) <= KEPT_SERVICES:  # the session cookie must stay small
        here.session.data["us"] = {"at": time.time(),
                                   "services": [str(s.get("id")) for s in us.services]}
        here.session.changed = True
    return us


def no_organization() -> Response:
    return error_page(403, "Your account has no organization",
                      "This workspace shows the referrals of the organization you work for, "
                      "and your account is not linked to one.",
                      "Ask your administrator to link your account to your organization "
                      "(a PractitionerRole with its organization).")


def add_views(bp: Blueprint) -> None:
    """Register every page of the workspace on its blueprint."""

    @bp.get("/")
    def queue() -> Response:
        here = current()
        if not here.session.signed_in:
            return render("workspace/welcome.html")
        us = us_or_none()
        if us is None:
            return no_organization()
        filters = Filters.from_args()
        found = load_queue(here.api, here.names(), us, policy_from(here.config.stalled_policy),
                           filters, request.args.get("page", ""))
        template = "workspace/_queue_body.html" if request.headers.get("X-Refresh") \
            else "workspace/queue.html"
        notice = None if request.headers.get("X-Refresh") else here.session.data.pop(
            "queue_notice", None)
        if notice:
            here.session.changed = True
        return render(template, q=found, filters=filters, statuses=STATE_ORDER,
                      queue_notice=notice,
                      status_words=STATUS_WORDS, refresh=here.config.refresh_seconds,
                      refresh_url=request.full_path.rstrip("?"))

    @bp.route("/referrals/<task_id>", methods=["GET", "POST"])
    @signed_in
    def referral(task_id: str) -> Response:
        us = us_or_none()
        if us is None:
            return no_organization()
        if request.method == "POST":
            return _act(us, task_id)
        return _referral_page(us, task_id)

    @bp.route("/referrals/<task_id>/redirect", methods=["GET", "POST"])
    @signed_in
    def redirect_to(task_id: str) -> Response:
        us = us_or_none()
        if us is None:
            return no_organization()
        return _redirect_page(us, task_id)

    add_capacity_views(bp, us_or_none, no_organization)
    add_numbers_views(bp, us_or_none, no_organization)
    add_settings_views(bp, us_or_none, no_organization)


# -- the referral page ----------------------------------------------------------------------
def _referral_page(us: Us, task_id: str, state: FormState | None = None,
                   status: int = 200) -> Response:
    here = current()
    refresh = bool(request.headers.get("X-Refresh"))
    try:
        detail = load_detail(here.api, here.names(), us, task_id,
                             policy_from(here.config.stalled_policy))
    except ApiError as exc:
        if exc.status in (404, 410) and _seen_offer(task_id):
            return render("workspace/_withdrawn.html" if refresh else "workspace/withdrawn.html",
                          task_id=task_id, refresh=here.config.refresh_seconds,
                          refresh_url=request.path)
        raise
    offer = is_offer(detail.task) and detail.task.get("owner") is None
    if offer:
        _remember_offer(task_id)
    notice = _take_notice(task_id)
    names = act.OFFER_ACTIONS if offer else act.OWNER_ACTIONS
    values = {"key": new_key(), "today": datetime.now(UTC).date().isoformat()}
    return render("workspace/_referral_body.html" if refresh else "workspace/referral.html",
                  status=status, d=detail, offer=offer, actions=act.offered(
                      detail.task.get("status") or "", names),
                  outcomes=list(act.OUTCOMES), state=state or FormState(), notice=notice,
                  values=values, refresh=here.config.refresh_seconds,
                  refresh_url=request.path)


def _offer_mark(task_id: str) -> str:
    """A short mark of a Task id (the session cookie stays small)."""
    return hashlib.sha256(task_id.encode()).hexdigest()[:12]


def _seen_offer(task_id: str) -> bool:
    seen = current().session.data.get("offers")
    return isinstance(seen, list) and _offer_mark(task_id) in seen


def _remember_offer(task_id: str) -> None:
    here = current()
    seen = here.session.data.get("offers")
    seen = seen if isinstance(seen, list) else []
    mark = _offer_mark(task_id)
    if mark not in seen:
        here.session.data["offers"] = ([mark] + seen)[:SEEN_OFFERS]
        here.session.changed = True


def _notice(task_id: str, kind: str, text: str) -> None:
    here = current()
    here.session.data["notice"] = {"task": task_id, "kind": kind, "text": text}
    here.session.changed = True


def _take_notice(task_id: str) -> dict | None:
    here = current()
    notice = here.session.data.get("notice")
    if isinstance(notice, dict) and notice.get("task") == task_id:
        here.session.data.pop("notice", None)
        here.session.changed = True
        return notice
    return None


STALE = ("Someone else changed this referral while you had it open, so nothing you sent "
         "was saved. This is the referral as it is now: check it and act again if you "
         "still need to.")
DONE = {"accept": "Accepted. The referral is yours; the referring clinic sees it.",
        "reject": "Declined. The referring clinic sees your reason.",
        "start": "Care started.", "hold": "Put on hold.", "resume": "Resumed.",
        "complete": "Completed. The referring clinic sees the outcome.",
        "fail": "Closed as not completed. The referring clinic sees why.",
        "claim": "Accepted. This referral is now yours; the other providers see it "
                 "withdrawn.",
        "redirect": "Redirected. The new provider received the referral."}


def _act(us: Us, task_id: str) -> Response:
    """Do one action with the page's version (If-Match); errors next to the action."""
    here = current()
    form = request.form
    state = FormState(values={k: form.getlist(k) for k in form if k != "csrf"})
    action = act.ACTIONS.get(form.get("action", ""))
    version = form.get("version", "")
    if action is None:
        state.add(None, "Unknown action: reload the page and try again.")
        return _referral_page(us, task_id, state, 400)
    try:
        task = here.api.read(f"Task/{task_id}")
    except ApiError as exc:
        if exc.status in (404, 410) and _seen_offer(task_id):
            return redirect(url_for(".referral", task_id=task_id), 303)
        raise
    if str((task.get("meta") or {}).get("versionId")) != version:
        _notice(task_id, "stale", STALE)
        return redirect(url_for(".referral", task_id=task_id), 303)
    code = state.value(f"{action.name}_code")
    text = state.value(f"{action.name}_text").strip()
    if action.reason == "coded" and code not in dict(action.reasons):
        state.add(f"{action.name}_code", "Choose a reason from the list.")
    if len(text) > act.MAX_TEXT:
        state.add(f"{action.name}_text", f"Keep it under {act.MAX_TEXT} characters.")
    if action.name == "complete":
        _check_completion(state)
    if state.has_errors:
        state.values["open_action"] = [action.name]
        return _referral_page(us, task_id, state, 400)
    try:
        _write(us, task, action, version, code, text, state)
    except ApiError as exc:
        if exc.status == 412:
            _notice(task_id, "stale", STALE)
            return redirect(url_for(".referral", task_id=task_id), 303)
        if exc.status in (401, 404, 410) or (exc.status == 403 and action.name == "claim"):
            raise
        action.fields.place_error(state, exc)
        state.values["open_action"] = [action.name]
        return _referral_page(us, task_id, state, 422 if exc.status == 422 else 400)
    _notice(task_id, "done", DONE[action.name])
    if action.name == "decline":
        here.session.data["queue_notice"] = "You declined the open referral; it is no " \
                                            "longer offered to your organization."
        return redirect(url_for(".queue"), 303)
    return redirect(url_for(".referral", task_id=task_id), 303)


def _check_completion(state: FormState) -> None:
    if state.value("complete_code") not in dict(act.OUTCOMES):
        state.add("complete_code", "Choose what was done.")
    day = state.value("complete_date")
    try:
        when = datetime.strptime(day, "%Y-%m-%d").date()
    except ValueError:
        state.add("complete_date", "Give the date of the service (YYYY-MM-DD).")
        return
    if when > datetime.now(UTC).date():
        state.add("complete_date", "The date of the service cannot be in the future.")
    if valid_key(state.value("complete_key")) is None:
        state.add(None, "The form is missing its key; reload the page and send it again.")


def _write(us: Us, task: dict, action: act.Action, version: str, code: str, text: str,
           state: FormState) -> None:
    api = current().api
    etag = f'W/"{version}"'
    if action.name == "claim":
        api.update(act.claimed(task, us.organization), etag)
    elif action.name == "decline":
        api.update(act.declined_offer(task, us.refs, us.organization, code, text), etag)
    elif action.name == "complete":
        api.transaction(act.completion_entries(
            task, version, valid_key(state.value("complete_key")) or "", us.organization,
            state.value("complete_code"), state.value("complete_date"),
            state.value("complete_note").strip()))
    else:
        api.update(act.moved(task, action, code, text), etag)


# -- redirect through $match ------------------------------------------------------------------
def _redirect_page(us: Us, task_id: str) -> Response:
    here = current()
    api = here.api
    task = api.read(f"Task/{task_id}")
    version = str((task.get("meta") or {}).get("versionId") or "")
    state = FormState(values={k: request.form.getlist(k) for k in request.form
                              if k != "csrf"}) if request.method == "POST" else FormState()
    focus = (task.get("focus") or {}).get("reference") or ""
    problem, result = "", None
    if task.get("status") != "requested":
        problem = "Only a new referral (not yet accepted) can be redirected."
    else:
        try:
            result = find_providers(api, {"resourceType": "Parameters", "parameter": [
                {"name": "count", "valueInteger": 10},
                {"name": "near-misses", "valueInteger": 0}]}, f"{focus}/$match")
        except ApiError as exc:
            if exc.status in (401,):
                raise
            problem = exc.message
    choices = [m for m in (result.matches if result else [])
               if m.organization_ref not in us.refs]
    if request.method == "POST" and not problem:
        chosen = state.value("redirect_service")
        reason = state.value("redirect_reason").strip()
        if chosen not in {m.id for m in choices}:
            state.add("redirect_service", "Choose the provider to send the referral to.")
        if state.value("version") != version:
            _notice(task_id, "stale", STALE)
            return redirect(url_for(".referral", task_id=task_id), 303)
        if not state.has_errors:
            try:
                api.request("POST", f"Task/{task_id}/$redirect", body=act.redirect_parameters(
                    f"HealthcareService/{chosen}", reason), headers={"If-Match": f'W/"{version}"'})
            except ApiError as exc:
                if exc.status == 412:
                    _notice(task_id, "stale", STALE)
                    return redirect(url_for(".referral", task_id=task_id), 303)
                if exc.status in (401, 404):
                    raise
                REDIRECT_FIELDS.place_error(state, exc)
            else:
                _notice(task_id, "done", DONE["redirect"])
                return redirect(url_for(".referral", task_id=task_id), 303)
    row = work_rows(here.names(), [task], policy_from(here.config.stalled_policy))[0]
    return render("workspace/redirect.html", status=422 if state.has_errors else 200,
                  task=task, task_id=task_id, version=version, choices=choices,
                  problem=problem, state=state, requester=row.requester)
