"""What a test is, what it found and how a run ends: plain data, no HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from fhir_server.conformance.context import TestContext

LEVELS = ("SHALL", "SHOULD", "MAY")

PASS = "pass"  # every check held
FAIL = "fail"  # a SHALL check failed
WARN = "warn"  # only SHOULD / MAY checks failed
SKIP = "skip"  # could not run (a prerequisite failed or a second party is missing)
NA = "n/a"  # does not apply to this server (e.g. it does not claim Subscription support)
ERROR = "error"  # the kit could not finish the test (network error, unreadable response)
OUTCOMES = (PASS, FAIL, WARN, SKIP, NA, ERROR)


@dataclass(frozen=True)
class Requirement:
    """One requirement a test checks: an IG statement key, a CapabilityStatement expectation,
    or a rule of a specification the IG depends on (Subscriptions Backport, FHIR, SMART)."""

    key: str  # e.g. "refer-9", "CS ReferralSource: Task.searchParam status"
    level: str  # SHALL | SHOULD | MAY
    text: str
    source: str = ""  # where it comes from (URL or document)


@dataclass
class Finding:
    """A check that did not hold."""

    level: str
    message: str


@dataclass
class Exchange:
    """One HTTP request and its response, kept as excerpts for the reports."""

    method: str
    url: str
    request_headers: dict[str, str]
    request_body: str
    status: int | None
    response_headers: dict[str, str]
    response_body: str
    elapsed_ms: float
    party: str = ""

    def summary(self) -> str:
        shown = self.status if self.status is not None else "no response"
        return f"{self.method} {self.url} -> {shown}"


class Stop(Exception):  # noqa: N818  (control flow, not an error)
    """Ends a test early with an outcome other than fail (skip / n/a)."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class CheckFailed(Exception):  # noqa: N818
    """A `require` that did not hold: the test cannot go on."""


@dataclass
class TestCase:
    """One named test. `run` gets a TestContext; checks record Findings."""

    id: str
    title: str
    group: str
    level: str
    requirements: tuple[Requirement, ...]
    run: Callable[[TestContext], None]
    parties: tuple[str, ...] = ()  # roles that must be distinct identities (e.g. "recipient")


@dataclass
class TestResult:
    test: TestCase
    outcome: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    reason: str = ""  # why skipped / n/a / error
    elapsed_ms: float = 0.0

    def headline(self) -> str:
        """One line saying what happened."""
        if self.findings:
            return self.findings[0].message
        return self.reason or (self.notes[0] if self.notes else "")

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.test.id, "title": self.test.title, "group": self.test.group,
            "level": self.test.level, "outcome": self.outcome, "reason": self.reason,
            "elapsedMs": round(self.elapsed_ms, 1),
            "requirements": [{"key": r.key, "level": r.level, "text": r.text,
                              "source": r.source} for r in self.test.requirements],
            "findings": [{"level": f.level, "message": f.message} for f in self.findings],
            "notes": list(self.notes),
            "exchanges": [exchange_json(x) for x in self.exchanges],
        }


def exchange_json(x: Exchange) -> dict[str, Any]:
    return {"party": x.party, "method": x.method, "url": x.url,
            "requestHeaders": x.request_headers, "requestBody": x.request_body,
            "status": x.status, "responseHeaders": x.response_headers,
            "responseBody": x.response_body, "elapsedMs": round(x.elapsed_ms, 1)}


def outcome_of(level: str, findings: list[Finding]) -> str:
    """fail when a SHALL finding exists, warn for SHOULD/MAY findings only, else pass."""
    if any(f.level == "SHALL" for f in findings):
        return FAIL
    return WARN if findings else PASS


@dataclass
class RunReport:
    """Everything a run produced."""

    base: str
    actor: str
    started: str
    finished: str
    results: list[TestResult]
    validation: str  # how returned resources were validated
    cleanup: list[str] = field(default_factory=list)
    kit_version: str = "1.0"

    def count(self, outcome: str, level: str | None = None) -> int:
        return sum(1 for r in self.results if r.outcome == outcome
                   and (level is None or r.test.level == level))

    @property
    def exit_code(self) -> int:
        """0: every SHALL test passed; 1: a SHALL test failed or errored; 3: no SHALL failure
        but some SHALL tests could not run (skipped)."""
        shall = [r for r in self.results if r.test.level == "SHALL"]
        if any(r.outcome in (FAIL, ERROR) for r in shall) or any(
                r.outcome == FAIL for r in self.results):
            return 1
        if any(r.outcome == SKIP for r in shall):
            return 3
        return 0
