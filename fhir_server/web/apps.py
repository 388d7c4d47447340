"""The frame every app is built in: `AppSpec` says what the app is, `app_blueprint` gives it
sign-in (SMART code flow with PKCE at its API server), a session bound to the user's tokens,
CSRF on every POST, security headers, error pages and `render`.

Inside a view of an app:

    here = current()            # the app, its session, the user, the API client
    bundle = here.api.search("Task", {...})   # with the user's token
    return render("clinician/tracker.html", tasks=...)

A view that needs a signed-in user is decorated with `@signed_in`. When the token is rejected
(expired, revoked) anywhere in a view, the user goes back through sign-in and comes back to
the same page, with the values of a submitted form restored (`restore_form`).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, g, redirect, render_template, request
from flask_babel import gettext as _

from fhir_server.web import i18n, smart
from fhir_server.web.api import ApiError, FhirApi, ServerDown, TokenRejected, entries
from fhir_server.web.config import WebConfig
from fhir_server.web.forms import FormState, kept_values
from fhir_server.web.headers import protect
from fhir_server.web.names import Names
from fhir_server.web.sealing import Sealer
from fhir_server.web.session import CookieJar, User, WebSession
from fhir_server.web.smart import Endpoints, LaunchError, Pending, Tokens
from fhir_server.web.transport import InProcess, OverHttp, Transport
from fhir_server.web.words import display_name
from mappers.reminder_preferences import preferred_language

log = logging.getLogger("fhir_server.web")
DISCOVERY_TTL = 3600.0
LANGUAGE_COOKIE_AGE = 365 * 24 * 3600
_discovered: dict[str, tuple[float, Endpoints]] = {}


@dataclass(frozen=True)
class AppSpec:
    """One app: where it lives, who it is for, how it signs in."""

    name: str  # short name: cookie names, endpoint prefix ("clinician")
    path: str  # URL prefix ("/app")
    title: str  # "Care team"
    summary: str  # one sentence for the landing page
    audience: str  # who uses it
    client_id: str  # its client_id at the API server's authorization server
    scope: str  # what it asks for at sign-in (user or patient scopes)
    nav: tuple[tuple[str, str], ...] = ()  # (endpoint, label) shown in the header
    patient_home: str = ""  # endpoint taking `patient_id`, opened after a patient launch
    roles: tuple[str, ...] = ()  # who may use it (id_token `roles`); empty: every user
    languages: tuple[str, ...] = ("en",)  # page languages (message catalogues in i18n.py)


@dataclass
class Current:
    """The request's app, session and API client."""

    spec: AppSpec
    config: WebConfig
    jar: CookieJar
    session: WebSession
    _api: FhirApi | None = None
    _form: FormState | None = field(default=None)

    @property
    def api(self) -> FhirApi:
        """The API server, with the signed-in user's token."""
        if self._api is None:
            token = self.session.hub.access_token if self.session.hub else None
            self._api = FhirApi(hub_base(self.config), hub_transport(self.config), token)
        return self._api

    def names(self) -> Names:
        return Names(self.api)

    @property
    def user(self) -> User:
        return self.session.user


def current() -> Current:
    """The app of the request being served."""
    return g.web_current


# -- where the API server is ----------------------------------------------------------
def hub_base(config: WebConfig) -> str:
    """The FHIR base the apps use: configured, else this server's own."""
    return config.api_base or config.base_url or request.host_url.rstrip("/") + "/fhir"


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def hub_transport(config: WebConfig) -> Transport:
    """In process when the API server is this server, else HTTP."""
    http = OverHttp(config.timeout)
    if config.api_base:
        return http
    return InProcess(current_app.wsgi_app, origin_of(hub_base(config)),
                     request.remote_addr or "127.0.0.1", http)


def app_root(config: WebConfig) -> str:
    """Where this server's pages live, as the browser sees them (no trailing slash)."""
    if config.base_url:
        root = config.base_url
        return root[:-len("/fhir")] if root.endswith("/fhir") else origin_of(root)
    return request.host_url.rstrip("/")


def hub_endpoints(config: WebConfig) -> Endpoints:
    """The API server's SMART endpoints (discovered, cached for an hour)."""
    base = hub_base(config)
    now = time.time()
    cached = _discovered.get(base)
    if cached and now - cached[0] < DISCOVERY_TTL:
        return cached[1]
    found = smart.discover(hub_transport(config), base)
    _discovered[base] = (now, found)
    return found


# -- rendering ------------------------------------------------------------------------
def render(template: str, status: int = 200, **values: Any) -> Response:
    """Render a page of the current app with the common context."""
    here: Current | None = g.get("web_current")
    html = render_template(template, here=here, spec=here.spec if here else None,
                           csrf=here.session.csrf if here else "", **values)
    return Response(html, status=status, mimetype="text/html")


def error_page(status: int, title: str, message: str, what_to_do: str = "",
               server: str = "") -> Response:
    """A page for a failure: what happened, which server, what to do."""
    return render("error.html", status=status, title=title, message=message,
                  what_to_do=what_to_do, server=server)


def restore_form(state: FormState | None = None) -> FormState:
    """The values a form page shows: those kept across a new sign-in for this page, if
    any (used once)."""
    state = state or FormState()
    here = current()
    kept = here.session.data.get("restore")
    if isinstance(kept, dict) and kept.get("path") == request.full_path.rstrip("?"):
        state.values = {k: list(v) for k, v in (kept.get("form") or {}).items()}
        state.restored = True
        here.session.data.pop("restore", None)
        here.session.changed = True
    return state


# -- sign-in --------------------------------------------------------------------------
def _secure() -> bool:
    return request.is_secure


def _safe_return(path: str, spec: AppSpec) -> str:
    """A return path inside the app (never another site)."""
    if path.startswith(spec.path) and not path.startswith("//") and "\\" not in path:
        return path
    return spec.path + "/"


def start_sign_in(return_to: str, form: dict[str, Any] | None = None,
                  launch: str | None = None, choose_patient: bool = False) -> Response:
    """Send the browser to the API server's authorization endpoint."""
    here = current()
    endpoints = hub_endpoints(here.config)
    scope = here.spec.scope
    if launch:
        scope = "launch " + scope
    elif choose_patient:
        scope = "launch/patient " + scope
    redirect_uri = f"{app_root(here.config)}{here.spec.path}/callback"
    url, pending = smart.begin(endpoints, "hub", here.spec.client_id, redirect_uri, scope,
                               launch=launch, return_to=_safe_return(return_to, here.spec))
    response = redirect(url, 303)
    here.jar.save_pending(response, pending, form or {}, _secure())
    return response


def _back_to_sign_in() -> Response:
    """The session's tokens no longer work: sign in again, keeping a posted form."""
    here = current()
    here.session.hub = None
    here.session.changed = True
    form = kept_values(request.form) if request.method == "POST" else {}
    return start_sign_in(request.full_path.rstrip("?"), form)


def finish_hub_sign_in(pending: Pending, form: dict[str, Any]) -> Response:
    """The callback of a sign-in at the API server: tokens, who the user is, then back."""
    here = current()
    error = request.args.get("error")
    if error:
        detail = request.args.get("error_description") or error
        raise LaunchError(400, f"Sign-in was not completed: {detail}", pending.iss)
    transport = hub_transport(here.config)
    tokens, body = smart.exchange(transport, pending, request.args.get("code", ""),
                                  "the sign-in server")
    if body.get("id_token"):
        claims = smart.verified_claims(transport, pending, str(body["id_token"]),
                                       "the sign-in server")
        tokens.fhir_user = smart.relative_fhir_user(str(claims.get("fhirUser") or ""),
                                                    pending.iss)
        tokens.username = str(claims.get("sub") or "")
        roles = [str(r) for r in claims.get("roles") or [] if isinstance(r, str)]
    else:
        roles = []
    here.session = WebSession(hub=tokens, ehr=here.session.ehr)  # new session id and CSRF
    here.session.user = load_user(FhirApi(pending.iss, transport, tokens.access_token),
                                  tokens)
    here.session.user.roles = roles
    here.session.changed = True
    target = pending.return_to or here.spec.path + "/"
    if form:
        here.session.data["restore"] = {"path": target, "form": form}
    elif tokens.patient and here.spec.patient_home and target.rstrip("/") == here.spec.path:
        from flask import url_for

        target = url_for(here.spec.patient_home, patient_id=tokens.patient)
    return redirect(_safe_return(target, here.spec), 303)


def load_user(api: FhirApi, tokens: Tokens) -> User:
    """The user's name, role and organization, read through the API."""
    user = User(username=tokens.username, fhir_user=tokens.fhir_user)
    if tokens.fhir_user.startswith("Patient/"):
        return _load_patient_user(api, user)
    if not tokens.fhir_user.startswith(("Practitioner/", "PractitionerRole/")):
        return user
    try:
        if tokens.fhir_user.startswith("PractitionerRole/"):
            roles = [api.read(tokens.fhir_user)]
        else:
            roles = entries(api.search("PractitionerRole", [
                ("practitioner", tokens.fhir_user), ("active", "true")]))
        practitioner = api.read(tokens.fhir_user) if tokens.fhir_user.startswith(
            "Practitioner/") else None
    except ApiError as exc:
        log.info("could not read the profile of %s: %s", tokens.fhir_user, exc.message)
        return user
    names = Names(api)
    names.know(practitioner)
    user.name = names.name(tokens.fhir_user, tokens.username)
    role = next((r for r in roles if (r.get("organization") or {}).get("reference")), None)
    if role is not None:
        user.role = f"PractitionerRole/{role['id']}"
        user.organization = role["organization"]["reference"]
        names.want(user.organization)
        names.fetch()
        user.organization_name = names.name(user.organization, "")
    return user


def _load_patient_user(api: FhirApi, user: User) -> User:
    """A patient signed in for themselves: their name, birth date and language."""
    try:
        patient = api.read(user.fhir_user)
    except ApiError as exc:
        log.info("could not read the record of %s: %s", user.fhir_user, exc.message)
        return user
    user.name = display_name(patient)
    user.birth_date = str(patient.get("birthDate") or "")
    user.language = preferred_language(patient)
    return user


def signed_in(view: Callable[..., Response]) -> Callable[..., Response]:
    """A view that needs a signed-in user (sends others through sign-in, form kept) who
    holds one of the app's roles, when it names any (403 page otherwise)."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        here = current()
        if not here.session.signed_in:
            return _back_to_sign_in()
        if here.spec.roles and not set(here.spec.roles) & set(here.user.roles):
            return error_page(403, "Not for your account",
                              f"{here.spec.title} is for {here.spec.audience}. Your account "
                              "does not have that role.",
                              f"Ask your administrator for the {' or '.join(here.spec.roles)}"
                              " role, then sign out and sign in again.")
        return view(*args, **kwargs)

    return wrapper


# -- the blueprint --------------------------------------------------------------------
EhrCallback = Callable[[Pending, dict[str, Any]], Response]


def app_blueprint(spec: AppSpec, config: WebConfig, sealer: Sealer,
                  ehr_callback: EhrCallback | None = None) -> Blueprint:
    """A blueprint for `spec` with sign-in, session, CSRF, headers and error pages. The app
    adds its own views to it."""
    bp = Blueprint(spec.name, __name__, url_prefix=spec.path)
    jar = CookieJar(spec.name, spec.path, sealer)

    @bp.before_request
    def _load() -> Response | None:
        session = jar.load(request)
        g.web_current = Current(spec, config, jar, session)
        if session.hub is not None and session.hub.expired():
            _refresh(g.web_current)
        if request.method == "POST":
            return _check_csrf(g.web_current)
        return None

    @bp.after_request
    def _finish(response: Response) -> Response:
        here: Current | None = g.get("web_current")
        if here is not None and here.session.changed:
            jar.save(response, here.session, _secure())
        asked = request.args.get("lang", "")
        if len(spec.languages) > 1 and asked in spec.languages:
            response.set_cookie(i18n.COOKIE, asked, max_age=LANGUAGE_COOKIE_AGE,
                                path=spec.path, httponly=True, samesite="Lax",
                                secure=_secure())
        targets = []
        cached = _discovered.get(hub_base(config)) if here else None
        if cached:
            targets.append(origin_of(cached[1].authorize))
        return protect(response, targets)

    @bp.errorhandler(TokenRejected)
    def _rejected(exc: TokenRejected) -> Response:
        return _back_to_sign_in()

    @bp.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        if exc.status in (404, 410):
            return error_page(404, _("Not found"), _(
                "This record does not exist, or it is not visible to you."),
                _("Go back to the list and open it from there."))
        if exc.status == 403:
            return error_page(403, _("Not allowed"), exc.message,
                              _("Ask your administrator for access."))
        log.info("API error %s on %s: %s", exc.status, exc.url, exc.message)
        return error_page(502 if exc.status >= 500 else exc.status, _("The server refused"),
                          exc.message, _("Check what you entered and try again."))

    @bp.errorhandler(ServerDown)
    def _down(exc: ServerDown) -> Response:
        return error_page(502, _("A server did not answer"),
                          _("%(server)s did not answer (%(why)s).", server=origin_of(exc.url),
                            why=exc.why),
                          _("Try again in a minute. If it keeps happening, tell your IT help "
                            "desk which server is named here."), origin_of(exc.url))

    @bp.errorhandler(LaunchError)
    def _launch_error(exc: LaunchError) -> Response:
        log.info("sign-in or launch failed (%s): %s", exc.status, exc.message)
        if exc.status >= 500:
            what = (f"Check that {exc.server or 'the other server'} is running, then start "
                    "the app again. If it keeps happening, call your IT help desk and give "
                    "them this message.")
            return error_page(502, _("The other system could not be used"), exc.message,
                              what, exc.server)
        return error_page(exc.status, _("Sign-in or launch refused"), exc.message,
                          _("Start the app again from your EHR, or sign in from the start "
                            "page."), exc.server)

    @bp.get("/login")
    def login() -> Response:
        target = request.args.get("next") or spec.path + "/"
        return start_sign_in(target, choose_patient=request.args.get("patient") == "choose")

    @bp.get("/callback")
    def callback() -> Response:
        found = jar.load_pending(request)
        if found is None or not hmac.compare_digest(found[0].state,
                                                    request.args.get("state", "")):
            raise LaunchError(400, "This sign-in answer does not match a sign-in started in "
                                   "this browser (unknown, used or expired state).")
        pending, form = found
        if pending.kind == "ehr":
            if ehr_callback is None:
                raise LaunchError(400, "This app takes no EHR launches.")
            response = ehr_callback(pending, form)
        else:
            response = finish_hub_sign_in(pending, form)
        jar.clear_pending(response)
        return response

    @bp.post("/logout")
    def logout() -> Response:
        here = current()
        if here.session.hub is not None:
            try:
                endpoints = hub_endpoints(config)
                smart.revoke(hub_transport(config), endpoints.revoke, spec.client_id,
                             here.session.hub.refresh_token or here.session.hub.access_token)
            except LaunchError:
                pass
        response = render("signed_out.html")
        jar.clear(response)
        here.session.changed = False
        return response

    return bp


def _refresh(here: Current) -> None:
    """Replace expired tokens using the refresh token; sign out when that fails."""
    assert here.session.hub is not None
    fresh = None
    try:
        endpoints = hub_endpoints(here.config)
        fresh = smart.refresh(hub_transport(here.config), endpoints.token,
                              here.spec.client_id, here.session.hub)
    except LaunchError:
        fresh = None
    here.session.hub = fresh
    here.session.changed = True


def _check_csrf(here: Current) -> Response | None:
    sent = request.form.get("csrf", "")
    if not here.session.signed_in:
        return _back_to_sign_in()  # the form is kept; it is never submitted on its own
    if not sent or not hmac.compare_digest(sent, here.session.csrf):
        return error_page(400, _("This form is out of date"),
                          _("The form was not sent by this page in this session."),
                          _("Go back, reload the page and send the form again."))
    return None
