"""Browser fixtures for every app's tests: Playwright (PyPI) driving Debian's chromium,
axe-core (npm) injected into pages, screenshots saved by the run.

* `chromium`: one browser for the whole run; skipped with a clear message when
  `/usr/bin/chromium` or Playwright is missing, except under CI (CI=true), where that fails.
* `web_server` (from tests.web_support): the server with auth on, one per module.
* `browser_page`: a fresh context (desktop size) per test; `phone_page` the same at 390 px
  with touch; `sign_in(page, server, user)`.
* `check(page, name)`: saves `<SCREENSHOT_DIR>/<module>/<name>.png` (default
  `var/screenshots`), runs axe-core (no serious or critical violation), and checks that the
  page has no horizontal scroll at 390 px, and that no script error or CSP violation was
  logged.

axe-core comes from npm: `npm install` at the repository root installs the version pinned in
`package.json` into `node_modules/` (`.ci/run` does it). Without it the axe check is skipped
with a message (and fails under CI).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.web_support import PASSWORD, WebServer, web_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
AXE = Path(os.environ.get("AXE_CORE_JS", ROOT / "node_modules/axe-core/axe.min.js"))
SCREENSHOTS = Path(os.environ.get("SCREENSHOT_DIR", ROOT / "var/screenshots"))
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PHONE_WIDTH = 390


def _missing(what: str) -> None:
    if IN_CI:
        pytest.fail(f"{what} is required in CI")
    pytest.skip(f"{what} is not installed: browser tests skipped")


@pytest.fixture(scope="session")
def chromium():
    """One headless chromium for the run."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright (pip install playwright)")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"chromium ({CHROMIUM}; Debian: apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _pages(chromium, **context_options):
    """A new browser context and its page, collecting script errors and CSP violations."""
    context = chromium.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(20_000)
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.console_errors = problems
    yield page
    context.close()


@pytest.fixture
def browser_page(chromium):
    """A new browser context and page (1280 x 900) for one test."""
    yield from _pages(chromium, viewport={"width": 1280, "height": 900})


@pytest.fixture
def phone_page(chromium):
    """A new phone-sized page (390 x 844, touch) for one test: pages built mobile first."""
    yield from _pages(chromium, viewport={"width": PHONE_WIDTH, "height": 844},
                      is_mobile=True, has_touch=True)


def sign_in(page, server: WebServer, username: str, start: str = "/app/login",
            approve: bool = True) -> None:
    """Sign in through our authorization server's pages (login, then Allow)."""
    page.goto(server.root + start)
    if page.locator("input[name=password]").count():
        page.fill("#username", username)
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
    if approve:
        page.click("button[value=approve]")


class PageChecks:
    """Screenshots, axe-core and the 390 px check for one test module."""

    def __init__(self, module: str) -> None:
        self.folder = SCREENSHOTS / module
        self.folder.mkdir(parents=True, exist_ok=True)
        self.axe_source = AXE.read_text() if AXE.exists() else None

    def __call__(self, page, name: str, phone: bool = True, axe: bool = True) -> None:
        page.screenshot(path=str(self.folder / f"{name}.png"), full_page=True)
        errors = [e for e in getattr(page, "console_errors", [])
                  if not e.startswith("Failed to load resource")]
        assert errors == [], f"{name}: script errors or CSP violations: {errors}"
        if axe:
            assert self.violations(page) == [], f"axe on {name}"
        if phone:
            self.phone(page, name)

    def violations(self, page) -> list[str]:
        """Serious and critical axe-core violations of the page, in words."""
        if self.axe_source is None:
            if IN_CI:
                pytest.fail(f"axe-core missing at {AXE} (npm install)")
            return []
        page.evaluate(self.axe_source)  # through the DevTools protocol: our CSP stays on
        result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        return [f"{v['id']} ({v['impact']}): {v['help']} at "
                f"{[n['target'] for n in v['nodes']][:3]}"
                for v in result["violations"] if v["impact"] in ("serious", "critical")]

    def phone(self, page, name: str) -> None:
        """At 390 px the page must not scroll sideways."""
        size = page.viewport_size
        page.set_viewport_size({"width": PHONE_WIDTH, "height": 844})
        try:
            width = page.evaluate("document.documentElement.scrollWidth")
            page.screenshot(path=str(self.folder / f"{name}-390.png"), full_page=True)
            assert width <= PHONE_WIDTH, f"{name}: {width} px wide at {PHONE_WIDTH} px"
        finally:
            page.set_viewport_size(size)


@pytest.fixture(scope="module")
def check(request):
    """`check(page, name)`: screenshot, axe-core, 390 px."""
    return PageChecks(Path(request.module.__file__).stem)
