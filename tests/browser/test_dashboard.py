"""The outcomes dashboard in a real browser, over the synthetic population of
examples/synthetic_population.py (seed 17): the network administrator's page renders
(screenshot, axe-core, 390 px), every figure on it equals the API's figure for the same
period with the same user's token, each CSV download equals its table, a manager sees only
their organization's referrals, and staff without the role are refused."""

from __future__ import annotations

import csv
import io
from datetime import date

import pytest

from fhir_server.web.sealing import Sealer
from tests.browser.conftest import sign_in
from tests.live import FhirHttp
from tests.outcomes_support import groups, synthetic_population

syn = synthetic_population()
PERIOD = "start=2026-06-01&end=2026-08-31"
API_PERIOD = {"start": "2026-06-01", "end": "2026-09-01"}  # the API's end is exclusive


POPULATION = syn.build(seed=17, referrals=60, start=date(2026, 6, 1))


@pytest.fixture(scope="module")
def world(web_server):
    syn.load(web_server.settings, POPULATION)
    net = web_server.network
    net.staff("network-admin", syn.CLINICS[0][0], "Noor", "Admin", admin=True)
    net.staff("lakeside-manager", "syn-lakeside", "Lee", "Manager", manager=True)
    net.staff("riverside-nurse", syn.CLINICS[0][0], "Pat", "Nurse")
    return web_server


def open_dashboard(page, server, username: str, query: str = PERIOD) -> None:
    sign_in(page, server, username, start="/dashboard/login")
    page.goto(f"{server.root}/dashboard/?{query}")


def api_as_page_user(page, server) -> FhirHttp:
    """The FHIR API with the token the dashboard used for this browser's session."""
    cookie = next(c for c in page.context.cookies() if c["name"] == "mhr_dashboard")
    session = Sealer.from_file(server.secret_file).open(cookie["value"], 3600)
    token = session["hub"]["access_token"]
    return FhirHttp(server.base, headers={"Authorization": f"Bearer {token}"})


def table_cells(page, table_id: str) -> list[list[str]]:
    """Header and rows of a table of the page, as text."""
    table = page.locator(f"#table-{table_id} table")
    header = [c.inner_text().strip() for c in table.locator("thead th").all()]
    rows = [[c.inner_text().strip() for c in row.locator("th, td").all()]
            for row in table.locator("tbody tr").all()]
    return [header, *rows]


def pct(value) -> str:
    return "—" if value is None or isinstance(value, str) else f"{round(value * 100, 2):g}%"


def hrs(value) -> str:
    if value is None or isinstance(value, str):
        return "—"
    return f"{value:g} h" + (f" ({value / 24:.1f} days)" if value >= 48 else "")


def test_the_administrator_sees_the_network_and_every_figure_is_the_apis(
        browser_page, world, check):
    page = browser_page
    open_dashboard(page, world, "network-admin")
    assert page.locator("h1").inner_text().startswith("Referral outcomes")
    assert page.locator("svg.chart").count() == 3
    check(page, "overview")

    api = api_as_page_user(page, world)
    answer = api.get("$referral-metrics", params={
        **API_PERIOD, "group-by": "owner,age-band"}).json()
    overall = groups(answer, "all")["all"]
    assert page.locator("#kpi-sent").inner_text() == str(overall["funnel.sent"])
    assert page.locator("#kpi-acceptance").inner_text() == pct(overall["acceptanceRate"])
    assert page.locator("#kpi-closed-loop").inner_text() == pct(overall["closedLoopRate"])
    assert page.locator("#kpi-accept").inner_text() == hrs(overall["duration.accept.median"])
    funnel = table_cells(page, "funnel")
    assert [r[1] for r in funnel[1:]] == [str(overall[f"funnel.{s}"]) for s in (
        "sent", "accepted", "started", "completed")]
    assert [r[2] for r in funnel[2:]] == [str(overall[f"funnel.{s}.lost"]) for s in (
        "accepted", "started", "completed")]
    times = table_cells(page, "times")
    assert times[1][1:4] == [str(overall["duration.accept.count"]),
                             hrs(overall["duration.accept.median"]),
                             hrs(overall["duration.accept.p90"])]
    assert times[3][2] == hrs(overall["duration.completion.median"])
    stalled = table_cells(page, "stalled-counts")
    assert [r[1] for r in stalled[1:]] == [str(overall[f"stalled.{c}"]) for c in (
        "stalled-not-accepted", "stalled-not-started", "stalled-no-progress")]
    organizations = table_cells(page, "organizations")
    owners = {g["name"]: g for g in groups(answer, "owner").values()}
    assert {r[0] for r in organizations[1:]} == set(owners) == {p[1] for p in syn.PROVIDERS}
    for row in organizations[1:]:
        group = owners[row[0]]
        assert row[1:5] == [str(group["funnel.sent"]), str(group["funnel.accepted"]),
                            pct(group.get("acceptanceRate")), pct(group.get("closedLoopRate"))]
        assert row[5] == hrs(group.get("duration.accept.median"))
        assert row[9] == str(group.get("outcome.redirected", 0))
    equity = table_cells(page, "equity")
    bands = {g["name"]: g for g in groups(answer, "age-band").values()}
    assert "<11" in {cell for row in equity[1:] for cell in row}  # small cells hidden
    for row in equity[1:]:
        group = bands[row[0]]
        assert row[1:4] == [str(group["patients"]), str(group["total"]),
                            str(group["funnel.sent"])]
        assert row[4] == pct(group.get("acceptanceRate"))
    outcomes = table_cells(page, "screening-outcomes")
    for row in outcomes[1:]:
        group = owners[row[0]]
        assert row[1] == str(group["screening.phq-9.pairs"])
        assert row[3] == pct(group.get("screening.phq-9.responseRate"))
        assert row[5] == (f"{group['screening.phq-9.meanChange']:g}"
                          if "screening.phq-9.meanChange" in group else "—")
    stalled_rows = page.locator("#stalled-list tbody tr")
    assert stalled_rows.count() > 0
    link = stalled_rows.first.locator("a").get_attribute("href")
    assert link.startswith("/app/referrals/")


def test_each_csv_download_is_its_table(browser_page, world):
    page = browser_page
    open_dashboard(page, world, "network-admin", PERIOD + "&equity=sex&outcomes=category")
    for table_id in ("funnel", "outcomes-now", "times", "stalled-counts", "organizations",
                     "equity", "screening-outcomes"):
        link = page.locator(f"#table-{table_id} .csv a")
        with page.expect_download() as download:
            link.click()
        text = open(download.value.path(), encoding="utf-8").read()
        assert list(csv.reader(io.StringIO(text))) == table_cells(page, table_id), table_id
    with page.expect_download() as download:
        page.locator("text=Download “Stalled referrals” as CSV").click()
    rows = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert len(rows) - 1 == page.locator("#stalled-list tbody tr").count()


def test_the_period_picker_and_the_switches(browser_page, world, check):
    page = browser_page
    open_dashboard(page, world, "network-admin")
    page.fill("#start", "2026-07-01")
    page.fill("#end", "2026-07-31")
    page.click("form.period button")
    page.wait_for_url("**start=2026-07-01**")
    api = api_as_page_user(page, world)
    july = groups(api.get("$referral-metrics", params={
        "start": "2026-07-01", "end": "2026-08-01"}).json(), "all")["all"]
    assert page.locator("#kpi-sent").inner_text() == str(july["funnel.sent"])
    page.click("nav[aria-label='Break down by'] >> text=race")
    assert page.locator("#table-equity h3").inner_text() == "By race"
    page.click("nav[aria-label='Group by'] >> text=month")
    assert {r[0] for r in table_cells(page, "organizations")[1:]} == {"July 2026"}
    check(page, "july-by-race")


def test_a_manager_sees_their_organizations_referrals(browser_page, world, check):
    """Lakeside's manager counts the referrals sent to Lakeside and the ones Lakeside's own
    redirects handed to another provider (it wrote those), not the rest of the network."""
    page = browser_page
    open_dashboard(page, world, "lakeside-manager")
    assert "Lakeside Behavioral Health" in page.locator("h1").inner_text()
    organizations = table_cells(page, "organizations")
    api = api_as_page_user(page, world)
    answer = api.get("$referral-metrics", params={**API_PERIOD, "group-by": "owner"}).json()
    owners = {g["name"]: g for g in groups(answer, "owner").values()}
    assert {r[0] for r in organizations[1:]} == set(owners)
    assert "Lakeside Behavioral Health" in owners
    for row in organizations[1:]:
        assert row[1] == str(owners[row[0]]["funnel.sent"])
    mine = groups(answer, "all")["all"]
    assert page.locator("#kpi-sent").inner_text() == str(mine["funnel.sent"])
    assert 0 < mine["total"] < len(POPULATION.tasks())  # not the whole network
    check(page, "manager")


def test_the_period_picker_by_keyboard(browser_page, world):
    """Tab reaches the dates in order, typing fills them, Enter shows the period; a table
    that scrolls sideways is a region the keyboard can focus."""
    page = browser_page
    open_dashboard(page, world, "network-admin")
    page.locator("body").focus()
    for _ in range(20):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "start":
            break
    assert page.evaluate("document.activeElement.id") == "start"
    page.keyboard.type("07012026")
    for _ in range(4):  # Tab also steps through the date field's own parts
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "end":
            break
    assert page.evaluate("document.activeElement.id") == "end"
    page.keyboard.type("07312026")
    page.keyboard.press("Enter")
    page.wait_for_url("**start=2026-07-01&end=2026-07-31**")
    assert "1 Jul 2026 to 31 Jul 2026" in page.locator("p.lead").inner_text()
    region = page.locator("#table-organizations .scroll")
    assert region.get_attribute("tabindex") == "0"
    region.focus()
    assert page.evaluate("document.activeElement.getAttribute('role')") == "region"


def test_staff_without_the_role_are_refused(browser_page, world):
    page = browser_page
    open_dashboard(page, world, "riverside-nurse")
    assert "Not for your account" in page.locator("h1").inner_text()
    assert page.locator("#kpi-sent").count() == 0
