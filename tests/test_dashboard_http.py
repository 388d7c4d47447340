"""The manager role and the outcomes dashboard over HTTP (no browser): `users add
--manager` stores the role, the sign-in's id_token carries it to the app, the dashboard is
refused to staff without it, renders for a manager with no data yet, and refuses an
unknown table. (The browser test, tests/browser/test_dashboard.py, checks the figures.)"""

from __future__ import annotations

import argparse

import pytest

from fhir_server.auth.cli import register_cli
from fhir_server.auth.registry import get_user
from fhir_server.web.sealing import Sealer
from tests.web_support import sign_in_http, web_server  # noqa: F401


@pytest.fixture(scope="module")
def site(web_server):  # noqa: F811 (the shared fixture, under a name of this module)
    return web_server


def run_cli(db, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fhir_server")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.auth_handler(args, db)


def test_users_add_manager(site, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("a long password\n")
    assert run_cli(site.db, "users", "add", "--username", "boss", "--password-file",
                   str(pw), "--practitioner", "Practitioner/b1", "--organization",
                   "Organization/o1", "--manager") == 0
    with site.db.read() as conn:
        assert get_user(conn, "boss").roles == ["manager"]
        assert get_user(conn, "boss").is_admin is False


def session_of(site, browser) -> dict:
    cookie = browser.cookies.get("mhr_dashboard", path="/dashboard")
    return Sealer.from_file(site.secret_file).open(cookie, 3600)


def test_the_role_reaches_the_app_and_opens_the_dashboard(site):
    net = site.network
    net.organization("clinic-one", "Clinic One")
    net.staff("one-manager", "clinic-one", "Mo", "Manager", manager=True)
    net.staff("one-nurse", "clinic-one", "Ny", "Nurse")
    manager = sign_in_http(site, "one-manager", "/dashboard")
    assert session_of(site, manager)["user"]["roles"] == ["manager"]
    page = manager.get(f"{site.root}/dashboard/", timeout=60)
    assert page.status_code == 200, page.text
    assert "Referral outcomes: Clinic One" in page.text
    assert "No referrals in this period." in page.text
    assert 'id="kpi-sent">0<' in page.text
    csv = manager.get(f"{site.root}/dashboard/csv/funnel", timeout=60)
    assert csv.status_code == 200 and csv.headers["Content-Type"].startswith("text/csv")
    assert csv.text.splitlines()[0] == "Stage,Referrals,Lost at this step,Share of sent"
    assert manager.get(f"{site.root}/dashboard/csv/nothing", timeout=60
                       ).status_code == 404
    nurse = sign_in_http(site, "one-nurse", "/dashboard")
    assert session_of(site, nurse)["user"]["roles"] == []
    refused = nurse.get(f"{site.root}/dashboard/", timeout=60)
    assert refused.status_code == 403 and "Not for your account" in refused.text


def test_a_bad_period_is_explained_not_refused(site):
    net = site.network
    net.organization("clinic-two", "Clinic Two")
    net.staff("two-admin", "clinic-two", "Ad", "Min", admin=True)
    admin = sign_in_http(site, "two-admin", "/dashboard")
    page = admin.get(f"{site.root}/dashboard/", params={
        "start": "2026-09-01", "end": "2026-08-01", "equity": "shoe-size"}, timeout=60)
    assert page.status_code == 200
    assert "the dates were swapped" in page.text
    assert "Referrals made from 1 Aug 2026 to 1 Sep 2026, across the network" in page.text
    assert "By age band" in page.text  # an unknown view falls back to the default


def test_a_csv_cell_is_never_a_spreadsheet_formula():
    from fhir_server.web.dashboard.figures import Table

    table = Table("t", "T", ["Organization", "Mean change"],
                  [["=HYPERLINK(\"http://x\")", "-6.27"], ["@SUM(A1)", "+3"], ["Clinic", "12%"]])
    rows = table.csv().splitlines()
    assert rows[1] == "\"'=HYPERLINK(\"\"http://x\"\")\",-6.27"
    assert rows[2] == "'@SUM(A1),+3" and rows[3] == "Clinic,12%"
