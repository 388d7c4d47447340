"""The conformance kit's HTML report in a real browser: a run against our server made
non-conformant (the owner may change Task.focus) shows the failure with its requirement and
the requests and responses; axe-core finds no serious issue; no sideways scroll at 390 px."""

from __future__ import annotations

import io

import pytest

from fhir_server.conformance.report import write_reports
from fhir_server.conformance.runner import run
from tests.browser.conftest import PageChecks
from tests.conformance_support import start_kit_server


@pytest.fixture(scope="module")
def report_file(database, tmp_path_factory):
    server = start_kit_server(database, tmp_path_factory.mktemp("kit"))
    server.breaker.mode = "owner-may-change-focus"
    try:
        report = run(server.config("referral-source", broken=True, tests=[
            "cap.fetch", "cap.formats", "cap.resource.Task", "cap.instantiates",
            "security.smart-*", "formats.xml-read", "search.Task.status",
            "workflow.task-create", "workflow.owner-limits"]), out=io.StringIO())
    finally:
        server.breaker.mode = None
        for stop in server.stops:
            stop()
    return write_reports(report, tmp_path_factory.mktemp("report"))[2]


def test_the_html_report_shows_the_failure_with_what_was_sent(browser_page, report_file):
    page = browser_page
    page.goto(report_file.as_uri())
    assert "a SHALL test failed (exit code 1)" in page.inner_text(".verdict")
    attention = page.locator("#attention ~ article").first  # failures come first
    assert "workflow.owner-limits" in attention.inner_text()
    assert "the owner changing Task.focus was accepted" in attention.inner_text()
    assert "task-update-permissions (SHALL)" in attention.inner_text()
    assert attention.locator(".exchange").count() >= 4
    assert "PUT http" in attention.inner_text()
    assert page.locator("tr#cap\\.formats .badge").inner_text() == "PASS"
    assert "Bearer " not in page.content()  # tokens are never written
    not_tested = page.locator("section[aria-labelledby=not-tested]")
    assert not_tested.locator("details").count() == 7
    not_tested.locator("summary", has_text="Domain terminology").click()
    assert "obsscreen-3" in not_tested.inner_text() and "VSAC" in not_tested.inner_text()
    checks = PageChecks("conformance")
    page.screenshot(path=str(checks.folder / "report-top.png"))  # the README's picture
    checks(page, "report")
