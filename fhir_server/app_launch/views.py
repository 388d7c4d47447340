"""The `/app` blueprint: our SMART app, launched from an external EHR.

`GET /app/launch?iss=…&launch=…` → discovery at `iss`, PKCE S256, `aud=iss` → the EHR's
authorize endpoint → `GET /app/callback` (state checked, code exchanged) → the EHR's Patient
and latest PHQ-9/GAD-7 are read → `GET /app/referral/<launch-id>`, whose form
(`POST /app/referral/<launch-id>`) creates a ServiceRequest in the EHR with the launch's
token. Errors are HTML pages: 400 for a bad request, 502 when the EHR fails.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from typing import Any

from flask import Blueprint, Response, current_app, redirect, request
from werkzeug.exceptions import HTTPException

from fhir_server.app_launch import ehr, store
from fhir_server.app_launch.config import AppConfig
from fhir_server.app_launch.ehr import EhrError
from fhir_server.app_launch.pages import error_page, referral_page
from fhir_server.app_launch.summary import (
    INSTRUMENTS,
    check_form,
    patient_summary,
    score_summary,
    service_request,
)
from fhir_server.config import Settings
from fhir_server.storage.db import Database

log = logging.getLogger("fhir_server.app_launch")

COOKIE = "mhr_app_browser"
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_TOTAL_CODES = {"phq9": ehr.PHQ9_TOTAL, "gad7": ehr.GAD7_TOTAL}
MAX_LAUNCH_LEN = 1024


def create_app_blueprint(settings: Settings) -> Blueprint:
    """Our EHR-launched SMART app, mounted at `/app`."""
    config = AppConfig.from_settings(settings)
    bp = Blueprint("app_launch", __name__, url_prefix="/app")
    if config.allow_any_iss:
        log.warning("FHIR_SERVER_APP_ALLOWED_ISS is empty and auth is off: the /app launch "
                    "accepts ANY EHR issuer (development only)")

    @bp.errorhandler(EhrError)
    def _ehr_error(exc: EhrError) -> Response:
        log.info("app launch failed (%s): %s", exc.status, exc.message)
        return error_page(exc.status, exc.message)

    @bp.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_page(exc.code or 400, exc.description or exc.name)

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error in the /app launch")
        return error_page(502, "The launch failed unexpectedly; nothing was written.")

    @bp.get("/launch")
    def launch() -> Response:
        return _launch(config)

    @bp.get("/callback")
    def callback() -> Response:
        return _callback(config)

    @bp.get("/referral/<launch_id>")
    def referral(launch_id: str) -> Response:
        found = _ready(launch_id)
        return referral_page(found.id, found.iss, found.data)

    @bp.post("/referral/<launch_id>")
    def create_referral(launch_id: str) -> Response:
        return _create_referral(config, _ready(launch_id))

    return bp


def _db() -> Database:
    return current_app.extensions["fhir_services"].db


def _browser() -> str | None:
    value = request.cookies.get(COOKIE)
    return value if value and _COOKIE_RE.match(value) else None


def _launch(config: AppConfig) -> Response:
    iss = request.args.get("iss", "").strip()
    launch = request.args.get("launch", "").strip()
    if not iss:
        raise EhrError(400, "The launch has no iss: start this app from your EHR.")
    ehr.check_absolute_http(iss, "iss")
    if not launch:
        raise EhrError(400, "The launch has no launch parameter: start this app from your EHR.")
    if len(launch) > MAX_LAUNCH_LEN:
        raise EhrError(400, "The launch parameter is too long.")
    if not config.iss_allowed(iss):
        raise EhrError(400, f"{iss} is not an EHR this app accepts launches from.")
    conf = ehr.discover(iss, config.timeout)
    redirect_uri = config.redirect_uri or request.host_url.rstrip("/") + "/app/callback"
    url, state, client_state = ehr.start(config, iss, launch, redirect_uri, conf)
    browser = _browser() or secrets.token_urlsafe(32)
    store.insert(_db(), store.new_launch_id(), state, browser, iss, client_state)
    response = redirect(url, 302)
    response.set_cookie(COOKIE, browser, max_age=store.LAUNCH_TTL, path="/app",
                        httponly=True, samesite="Lax", secure=request.is_secure)
    response.headers["Cache-Control"] = "no-store"
    return response


def _callback(config: AppConfig) -> Response:
    found = store.claim_for_callback(_db(), request.args.get("state", ""), _browser())
    if found is None:
        raise EhrError(400, "This authorization response does not match a launch started in "
                            "this browser (unknown, used or expired state).")
    if request.args.get("error"):
        detail = request.args.get("error_description") or request.args["error"]
        raise EhrError(400, f"The EHR did not authorize the app: {detail}")
    smart = ehr.restore(config, found.client_state)
    ehr.exchange(smart, request.url)
    patient = ehr.read_json(smart, f"Patient/{smart.patient_id}")
    if patient.get("resourceType") != "Patient":
        raise EhrError(502, "The EHR returned something other than the Patient")
    data = {"patient": patient_summary(patient), "scores": _scores(smart),
            "requester": _requester(config, smart, found), "csrf": secrets.token_urlsafe(24),
            "referrals": []}
    store.finish(_db(), found.id, ehr.state_of(smart, found.client_state), data)
    return redirect(f"/app/referral/{found.id}", 303)


def _scores(smart: Any) -> list[dict[str, Any]]:
    scores = []
    for key, instrument in INSTRUMENTS.items():
        try:
            observation = ehr.latest_observation(smart, smart.patient_id, _TOTAL_CODES[key])
        except EhrError as exc:
            scores.append({"instrument": instrument.title, "score": "-", "date": "",
                           "band": f"could not be read ({exc.message})", "id": None})
            continue
        summary = score_summary(observation, instrument)
        if summary:
            scores.append(summary)
    return scores


def _requester(config: AppConfig, smart: Any, found: store.Launch) -> str | None:
    """The user's fhirUser as a reference on the EHR (relative when it is the EHR's)."""
    user = ehr.fhir_user(config, smart, found.iss, found.client_state)
    base = found.iss.rstrip("/") + "/"
    if user and user.startswith(base):
        return user[len(base):]
    return user if user and not user.startswith(("http://", "https://")) else None


def _ready(launch_id: str) -> store.Launch:
    found = store.load_ready(_db(), launch_id, _browser())
    if found is None:
        raise EhrError(400, "This referral session is unknown, expired or belongs to another "
                            "browser.")
    return found


def _create_referral(config: AppConfig, found: store.Launch) -> Response:
    data = found.data
    if not hmac.compare_digest(request.form.get("csrf", ""), data.get("csrf", "")):
        raise EhrError(400, "The form is stale or was not sent by this page; reload it.")
    try:
        reason, priority = check_form(request.form)
    except ValueError as exc:
        return referral_page(found.id, found.iss, data, message=str(exc), status=400)
    supporting = [f"Observation/{s['id']}" for s in data.get("scores", []) if s.get("id")]
    resource = service_request(data["patient"]["id"], reason, priority, data.get("requester"),
                               supporting)
    smart = ehr.restore(config, found.client_state)
    created = ehr.create_service_request(smart, resource)
    data["referrals"] = [*data.get("referrals", []),
                         {"id": created.get("id"), "priority": priority}]
    store.save_data(_db(), found.id, data)
    return redirect(f"/app/referral/{found.id}", 303)
