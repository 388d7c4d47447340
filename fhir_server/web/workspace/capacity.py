"""Capacity: the organization's HealthcareServices with their capacity, wait time, accepted
coverage and when these were last confirmed; saving one confirms it. Capacity, notes and
wait go through `HealthcareService/[id]/$update-capacity` (which stamps the confirmed date);
a change of accepted coverage is a version-checked update of the HealthcareService."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import Blueprint, Response, redirect, request, url_for

from fhir_server.web.api import ApiError
from fhir_server.web.apps import current, render, signed_in
from fhir_server.web.forms import FieldMap, FormState
from fhir_server.web.workspace.queue import Us
from mappers import directory_model as dm

FIELDS = FieldMap(((r"capacity-status|capacityStatus", "capacity"),
                   (r"capacity-notes|capacityNotes", "notes"),
                   (r"wait-days|wait", "wait"), (r"coverage", "coverage")))
STALE_CAPACITY = ("Someone else changed this service while you had the page open, so "
                  "nothing was saved. These are its current values: check them and save "
                  "again.")
MAX_NOTES = 500


@dataclass
class ServiceCapacity:
    service: dict
    capacity: str
    notes: str
    wait: int | None
    coverage: frozenset[str]
    confirmed: str  # the dateTime, '' when never confirmed

    @property
    def id(self) -> str:
        return str(self.service.get("id"))

    @property
    def version(self) -> str:
        return str((self.service.get("meta") or {}).get("versionId") or "")

    @property
    def name(self) -> str:
        return self.service.get("name") or "(unnamed service)"

    @property
    def capacity_words(self) -> str:
        return dm.CAPACITY_CODES.get(self.capacity, "not stated")

    @property
    def stale(self) -> bool:
        """Not confirmed within the period after which $match ranks it lower (30 days)."""
        when = dm.parse_day(self.confirmed)
        return when is None or (datetime.now(UTC).date() - when).days > 30


def capacity_of(service: dict) -> ServiceCapacity:
    facts = dm.service_facts(service)
    confirmed = next((e.get("valueDateTime") for e in dm.extension_values(
        service, dm.EXT_CAPACITY_CONFIRMED)), "")
    return ServiceCapacity(service=service, capacity=facts.capacity or "",
                           notes=facts.capacity_notes or "", wait=facts.wait_days,
                           coverage=facts.coverage, confirmed=confirmed or "")


def with_coverage(service: dict, codes: list[str]) -> dict:
    """The service with exactly these accepted-coverage codes."""
    new = copy.deepcopy(service)
    keep = [e for e in new.get("extension") or [] if e.get("url") != dm.EXT_ACCEPTED_COVERAGE]
    keep += [dm.coverage_extension(c) for c in codes]
    new["extension"] = keep
    return new


def capacity_parameters(status: str, notes: str, wait: int | None) -> dict:
    params: list[dict] = [{"name": "capacity-status", "valueCode": status}]
    if notes:
        params.append({"name": "capacity-notes", "valueString": notes})
    if wait is not None:
        params.append({"name": "wait-days", "valueInteger": wait})
    return {"resourceType": "Parameters", "parameter": params}


def add_capacity_views(bp: Blueprint, us_or_none: Callable[..., Us | None],
                       no_organization: Callable[[], Response]) -> None:

    @bp.route("/capacity", methods=["GET", "POST"])
    @signed_in
    def capacity() -> Response:
        us = us_or_none(fresh=True)  # the services themselves, as they are now
        if us is None:
            return no_organization()
        if request.method == "POST":
            return _save(us)
        return _page(us)


def _page(us: Us, state: FormState | None = None, editing: str = "",
          status: int = 200) -> Response:
    here = current()
    notice = here.session.data.pop("capacity_notice", None)
    if notice:
        here.session.changed = True
    return render("workspace/capacity.html", status=status, us=us,
                  services=[capacity_of(s) for s in us.services], state=state or FormState(),
                  editing=editing, notice=notice, capacity_codes=list(dm.CAPACITY_CODES.items()),
                  payer_types=list(dm.PAYER_TYPES.items()))


def _save(us: Us) -> Response:
    here = current()
    form = request.form
    state = FormState(values={k: form.getlist(k) for k in form if k != "csrf"})
    service_id = form.get("service", "")
    mine = {str(s.get("id")): s for s in us.services}
    if service_id not in mine:
        state.add(None, "Choose one of your organization's services.")
        return _page(us, state, status=400)
    current_service = mine[service_id]
    shown = capacity_of(current_service)
    if form.get("version") != shown.version:
        here.session.data["capacity_notice"] = {"kind": "stale", "text": STALE_CAPACITY}
        here.session.changed = True
        return redirect(url_for(".capacity") + f"#service-{service_id}", 303)
    status = form.get("capacity", "")
    if status not in dm.CAPACITY_CODES:
        state.add("capacity", "Choose whether you can take new referrals.")
    notes = form.get("notes", "").strip()
    if len(notes) > MAX_NOTES:
        state.add("notes", f"Keep the note under {MAX_NOTES} characters.")
    wait: int | None = None
    raw_wait = form.get("wait", "").strip()
    if raw_wait:
        if not raw_wait.isdigit() or int(raw_wait) > 365:
            state.add("wait", "Give the wait in whole days (0 to 365), or leave it empty.")
        else:
            wait = int(raw_wait)
    coverage = [c for c in form.getlist("coverage") if c in dm.PAYER_TYPES]
    if state.has_errors:
        return _page(us, state, service_id, 400)
    try:
        if frozenset(coverage) != shown.coverage:
            here.api.update(with_coverage(current_service, coverage),
                            f'W/"{shown.version}"')
        here.api.operation(f"HealthcareService/{service_id}/$update-capacity",
                           body=capacity_parameters(status, notes, wait))
    except ApiError as exc:
        if exc.status == 412:
            here.session.data["capacity_notice"] = {"kind": "stale", "text": STALE_CAPACITY}
            here.session.changed = True
            return redirect(url_for(".capacity") + f"#service-{service_id}", 303)
        if exc.status in (401, 404):
            raise
        FIELDS.place_error(state, exc)
        return _page(us, state, service_id, 422 if exc.status == 422 else 400)
    here.session.data["capacity_notice"] = {
        "kind": "done", "text": f"Saved and confirmed: {shown.name}."}
    here.session.changed = True
    return redirect(url_for(".capacity") + f"#service-{service_id}", 303)
