"""The new-referral e-mail: the organization's intake address, kept as its own Subscriptions
(the existing e-mail channel) on our `referral-received` topic: one for referrals sent to the
organization (`owner`), one for open referrals offered to it (`candidate`). Content `empty`:
the e-mail carries no patient data, only the Subscription's reason, which says where the
workspace is. The Subscriptions belong to the organization (created with the user's token),
so only its staff see or change them, and `Subscription/$status` shows whether mail goes out.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, request, url_for

from fhir_server.web.api import ApiError, FhirApi, entries
from fhir_server.web.apps import app_root, current, render, signed_in
from fhir_server.web.forms import FieldMap, FormState
from fhir_server.web.workspace.queue import Us
from fhir_server.workflow.canonical import CANONICAL_BASE

TOPIC = f"{CANONICAL_BASE}/SubscriptionTopic/referral-received"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_EXT = BACKPORT + "backport-filter-criteria"
CONTENT_EXT = BACKPORT + "backport-payload-content"
PROFILE = BACKPORT + "backport-subscription"
KINDS = ("owner", "candidate")  # referrals sent to us / open referrals offered to us
EMAIL = re.compile(r"^[^@\s<>,;:\"]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
FIELDS = FieldMap(((r"endpoint|channel", "email"),))


@dataclass
class Intake:
    """The organization's intake e-mail setting as its Subscriptions hold it."""

    subscriptions: dict[str, dict]  # kind -> Subscription

    @property
    def email(self) -> str:
        for sub in self.subscriptions.values():
            endpoint = (sub.get("channel") or {}).get("endpoint") or ""
            if endpoint.startswith("mailto:"):
                return endpoint.removeprefix("mailto:")
        return ""

    @property
    def status(self) -> str:
        """The worst delivery status of the two ('' when there is no setting)."""
        statuses = [s.get("status", "") for s in self.subscriptions.values()]
        for worst in ("error", "off", "requested", "active"):
            if worst in statuses:
                return worst
        return ""

    @property
    def problem(self) -> str:
        for sub in self.subscriptions.values():
            if sub.get("status") == "error" and sub.get("error"):
                return str(sub["error"])
        return ""


def filter_of(sub: dict) -> str:
    for ext in (sub.get("_criteria") or {}).get("extension") or []:
        if ext.get("url") == FILTER_EXT:
            return str(ext.get("valueString") or "")
    return ""


def load_intake(api: FhirApi, us: Us) -> Intake:
    """Our Subscriptions on the referral-received topic, by kind."""
    found = entries(api.search("Subscription", [("criteria", TOPIC), ("_count", "50")]))
    out: dict[str, dict] = {}
    for sub in found:
        text = filter_of(sub)
        for kind in KINDS:
            if text.startswith(f"Task?{kind}=") and us.organization in text:
                out.setdefault(kind, sub)
    return Intake(out)


def subscription(kind: str, us: Us, email: str, workspace: str) -> dict:
    """The Subscription that e-mails `email` when a referral is sent to (or offered to) us."""
    what = "New referrals" if kind == "owner" else "New open referrals offered"
    reason = (f"{what} for {us.name or us.organization}. Open the provider workspace to see "
              f"them: {workspace} (sign in; this e-mail carries no patient information).")
    return {
        "resourceType": "Subscription", "meta": {"profile": [PROFILE]},
        "status": "requested", "reason": reason, "criteria": TOPIC,
        "_criteria": {"extension": [{"url": FILTER_EXT, "valueString": "Task?" + urlencode(
            {kind: ",".join(us.refs)}, safe=",/")}]},
        "channel": {"type": "email", "endpoint": f"mailto:{email}",
                    "payload": "application/fhir+json",
                    "_payload": {"extension": [{"url": CONTENT_EXT, "valueCode": "empty"}]}}}


def add_settings_views(bp: Blueprint, us_or_none: Callable[[], Us | None],
                       no_organization: Callable[[], Response]) -> None:

    @bp.route("/settings", methods=["GET", "POST"])
    @signed_in
    def settings() -> Response:
        us = us_or_none()
        if us is None:
            return no_organization()
        here = current()
        intake = load_intake(here.api, us)
        if request.method == "GET":
            notice = here.session.data.pop("settings_notice", None)
            if notice:
                here.session.changed = True
            return _page(us, intake, FormState(values={"email": [intake.email]}), notice)
        return _save(us, intake)


def _page(us: Us, intake: Intake, state: FormState, notice: str | None = None,
          status: int = 200) -> Response:
    return render("workspace/settings.html", status=status, us=us, intake=intake,
                  state=state, notice=notice)


def _save(us: Us, intake: Intake) -> Response:
    here = current()
    state = FormState(values={k: request.form.getlist(k) for k in request.form
                              if k != "csrf"})
    try:
        if request.form.get("action") == "stop":
            for sub in intake.subscriptions.values():
                here.api.request("DELETE", f"Subscription/{sub['id']}")
            message = "New-referral e-mails are off."
        else:
            email = state.value("email").strip()
            if not EMAIL.match(email) or len(email) > 200:
                state.add("email", "Give one e-mail address, like intake@example.org.")
                return _page(us, intake, state, status=400)
            workspace = f"{app_root(here.config)}{url_for('.queue')}"
            for kind in KINDS:
                body = subscription(kind, us, email, workspace)
                existing = intake.subscriptions.get(kind)
                if existing is None:
                    here.api.create(body)
                else:
                    here.api.update({**body, "id": existing["id"]})
            message = (f"New referrals will be e-mailed to {email}: a short notice with a "
                       "link to this workspace, never patient details.")
    except ApiError as exc:
        if exc.status in (401, 404):
            raise
        FIELDS.place_error(state, exc)
        return _page(us, intake, state, status=422 if exc.status == 422 else 400)
    here.session.data["settings_notice"] = message
    here.session.changed = True
    return redirect(url_for(".settings"), 303)
