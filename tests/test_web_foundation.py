"""The web foundation over HTTP: landing page, security headers, sign-in bound to SMART
tokens, CSRF, sealed cookies, idempotent creates, form values kept across a new sign-in, and
the rule that apps reach data only through the FHIR API."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import requests

from tests.web_support import csrf_of, hidden, sign_in_http, web_server  # noqa: F401

WEB = Path(__file__).resolve().parents[1] / "fhir_server" / "web"


@pytest.fixture(scope="module")
def world(web_server):  # noqa: F811
    net = web_server.network
    net.organization("clinic-a", "Riverside Family Health Center")
    net.organization("clinic-b", "Hillside Clinic")
    net.organization("lakeside", "Lakeside Behavioral Health")
    net.service("svc-crisis", "lakeside", "Lakeside 24/7 crisis team", "crisis", "183866009",
                around_the_clock=True)
    net.service("svc-therapy", "lakeside", "Lakeside counseling", "therapy", "306226009")
    doc = net.staff("dr_okafor", "clinic-a", "Amara", "Okafor")
    net.staff("dr_hill", "clinic-b", "Sam", "Hill")
    clinic = net.client_for("clinic-a")
    patient = net.screened_patient(clinic, doc, "Marisol", "Delgado",
                                   [2, 2, 2, 2, 2, 2, 2, 2, 2], [2, 2, 2, 1, 1, 1, 1])
    return {"doc": doc, "patient": patient}


def test_landing_page_names_the_apps_and_links_api(web_server):  # noqa: F811
    r = requests.get(f"{web_server.root}/", timeout=30)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "Care team" in r.text and 'href="/app/"' in r.text
    assert 'href="/fhir/metadata"' in r.text and 'href="/docs"' in r.text
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["X-Content-Type-Options"] == "nosniff"
    docs = requests.get(f"{web_server.root}/docs", timeout=30)
    assert docs.status_code == 200 and "$match" in docs.text and "Task" in docs.text


def test_sign_in_binds_the_session_to_the_users_tokens(web_server, world):  # noqa: F811
    anonymous = requests.get(f"{web_server.root}/app/referrals", allow_redirects=False,
                             timeout=30)
    assert anonymous.status_code == 303 and "/auth/authorize?" in anonymous.headers["Location"]
    browser = sign_in_http(web_server, "dr_okafor")
    cookie = next(c for c in browser.cookies if c.name == "mhr_clinician")
    assert cookie.path == "/app" and cookie.has_nonstandard_attr("HttpOnly")
    home = browser.get(f"{web_server.root}/app/", timeout=30)
    assert "Dr Amara Okafor, Riverside Family Health Center" in home.text
    assert home.headers["Cache-Control"] == "no-store"


# Modules our apps may import: Flask and friends, HTTP and crypto libraries, pure helpers of
# this repository (mappers, constants of the workflow) and the web package itself. Never the
# database, storage, interactions, the access policy or the features that use them.
FORBIDDEN = ("fhir_server.storage", "fhir_server.interactions", "fhir_server.auth",
             "fhir_server.features", "fhir_server.rest", "fhir_server.search",
             "fhir_server.wiring", "fhir_server.app", "fhir_server.matching",
             "fhir_server.workflow.write_path", "sqlalchemy", "subscriptions", "profiles")


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_apps_reach_data_only_through_the_fhir_api():
    modules = sorted(WEB.rglob("*.py"))
    assert len(modules) > 10
    bad = {str(m.relative_to(WEB)): sorted(i for i in _imports(m)
                                           if i.startswith(FORBIDDEN)) for m in modules}
    assert {k: v for k, v in bad.items() if v} == {}


def test_templates_have_no_inline_script_or_style():
    for template in (WEB / "templates").rglob("*.html"):
        text = template.read_text()
        assert "<script>" not in text and " style=" not in text and "<style" not in text, \
            template
        assert not re.search(r"\son[a-z]+=", text), template  # no inline event handlers


def test_forms_need_the_sessions_csrf_value(web_server, world):  # noqa: F811
    browser = sign_in_http(web_server, "dr_okafor")
    page = browser.get(f"{web_server.root}/app/", timeout=30)
    r = browser.post(f"{web_server.root}/app/logout", data={"csrf": "forged"}, timeout=30)
    assert r.status_code == 400 and "out of date" in r.text
    r = browser.post(f"{web_server.root}/app/logout", data={"csrf": csrf_of(page.text)},
                     timeout=30)
    assert r.status_code == 200 and "signed out" in r.text
    after = browser.get(f"{web_server.root}/app/referrals", allow_redirects=False, timeout=30)
    assert after.status_code == 303  # signed out: back through sign-in


def test_a_tampered_or_foreign_cookie_is_no_session(web_server, world):  # noqa: F811
    browser = sign_in_http(web_server, "dr_okafor")
    value = browser.cookies.get("mhr_clinician", path="/app")
    tampered = value[:-6] + ("A" if value[-6] != "A" else "B") + value[-5:]
    other = requests.Session()
    other.cookies.set("mhr_clinician", tampered, path="/app")
    r = other.get(f"{web_server.root}/app/referrals", allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/auth/authorize" in r.headers["Location"]


def test_double_submit_creates_one_referral(web_server, world):  # noqa: F811
    browser = sign_in_http(web_server, "dr_okafor")
    url = f"{web_server.root}/app/patients/{world['patient']}/send?service=svc-therapy"
    form = browser.get(url, timeout=30).text
    data = {"csrf": csrf_of(form), "idempotency_key": hidden(form, "idempotency_key"),
            "service": "svc-therapy", "reason": "Moderate depression", "priority": "routine"}
    first = browser.post(url, data=data, allow_redirects=False, timeout=30)
    second = browser.post(url, data=data, allow_redirects=False, timeout=30)
    assert first.status_code == second.status_code == 303, first.text
    assert first.headers["Location"] == second.headers["Location"]


def test_expired_sign_in_keeps_the_typed_form(web_server, world):  # noqa: F811
    """The token is revoked while the user types: the send goes back through sign-in and the
    form comes back with what was typed (nothing is sent on its own)."""
    from fhir_server.web.sealing import Sealer

    browser = sign_in_http(web_server, "dr_okafor")
    url = f"{web_server.root}/app/patients/{world['patient']}/send?service=svc-therapy"
    form = browser.get(url, timeout=30).text
    sealed = browser.cookies.get("mhr_clinician", path="/app")
    token = Sealer.from_file(web_server.secret_file).open(sealed, 3600)["hub"]
    for value in (token["refresh_token"], token["access_token"]):
        requests.post(f"{web_server.root}/auth/revoke", data={
            "token": value, "client_id": "mh-referral-app"}, timeout=30)
    typed = "Typed while the token expired: panic attacks at work"
    r = browser.post(url, data={"csrf": csrf_of(form), "reason": typed, "priority": "urgent",
                                "idempotency_key": hidden(form, "idempotency_key"),
                                "service": "svc-therapy"}, allow_redirects=False, timeout=30)
    assert r.status_code == 303 and "/auth/authorize?" in r.headers["Location"], r.text
    from tests.web_support import approve_http

    back = approve_http(web_server, browser, r.headers["Location"], "dr_okafor")
    assert back.status_code == 303 and back.headers["Location"].endswith(
        "/send?service=svc-therapy"), back.headers
    page = browser.get(web_server.root + back.headers["Location"], timeout=30).text
    assert typed in page and "what you had entered is back" in page
    assert re.search(r'<option value="urgent" selected>', page)


def test_422_text_is_shown_next_to_the_field_it_names(web_server, world):  # noqa: F811
    browser = sign_in_http(web_server, "dr_okafor")
    url = f"{web_server.root}/app/patients/{world['patient']}/send?service=svc-therapy"
    form = browser.get(url, timeout=30).text
    r = browser.post(url, data={"csrf": csrf_of(form), "reason": "x", "priority": "whenever",
                                "idempotency_key": hidden(form, "idempotency_key"),
                                "service": "svc-therapy"}, timeout=30)
    assert r.status_code in (400, 422)
    field = re.search(r'<div class="field has-error">\s*<label for="priority">.*?</div>',
                      r.text, re.S)
    assert field and "whenever" in field.group(0), r.text
