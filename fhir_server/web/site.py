"""The site around the apps: the landing page at `/`, the API overview at `/docs`, the shared
static files (`/static/web/...`) and the template filters every page uses."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from fhir_server.web import i18n, words
from fhir_server.web.api import ApiError, FhirApi, ServerDown
from fhir_server.web.apps import AppSpec, hub_base, hub_transport, render
from fhir_server.web.config import WebConfig
from fhir_server.web.headers import protect


def csrf_value() -> str:
    """The CSRF value of the signed-in session of the app serving this request ('' outside
    an app)."""
    here = g.get("web_current")
    return here.session.csrf if here is not None else ""


def site_blueprint(config: WebConfig, apps: list[AppSpec]) -> Blueprint:
    """`/`, `/docs` and the static files."""
    bp = Blueprint("web", __name__, template_folder="templates", static_folder="static",
                   static_url_path="/static/web")
    bp.record_once(lambda state: i18n.init_app(state.app))

    for name, func in (("ago", words.when), ("day", words.day), ("day_time", words.day_time),
                       ("priority", words.priority_words), ("task_status", words.task_status),
                       ("concept", words.concept_text), ("long_day", i18n.long_day),
                       ("language", words.patient_language), ("stalled", words.stalled_words)):
        bp.add_app_template_filter(func, name)

    bp.add_app_template_global(csrf_value, "csrf_value")

    @bp.after_app_request
    def _headers(response: Response) -> Response:
        if request.blueprint == "web" and request.endpoint != "web.static":
            return protect(response, cache="no-cache")
        return response

    @bp.get("/")
    def landing() -> Response:
        g.web_current = None
        return render("landing.html", apps=apps, fhir_base=hub_base(config))

    @bp.get("/docs")
    def docs() -> Response:
        g.web_current = None
        api = FhirApi(hub_base(config), hub_transport(config))
        problem = ""
        capability: dict = {}
        try:
            capability = api.request("GET", "metadata")
        except (ApiError, ServerDown) as exc:
            problem = str(exc)
        rest = ((capability or {}).get("rest") or [{}])[0]
        resources = sorted(rest.get("resource") or [], key=lambda r: r.get("type", ""))
        operations: dict[str, dict] = {}
        for res in [{"type": "(system)", "operation": rest.get("operation") or []},
                    *resources]:
            for op in res.get("operation") or []:
                entry = operations.setdefault(f"${op.get('name')}", {
                    "definition": op.get("definition", ""), "types": []})
                entry["types"].append(res["type"])
        return render("docs.html", capability=capability, resources=resources,
                      operations=sorted(operations.items()), problem=problem,
                      fhir_base=hub_base(config), apps=apps)

    return bp
