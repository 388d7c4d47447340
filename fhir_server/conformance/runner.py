"""Runs the selected tests of one actor against a server and prints a line per test."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

import requests

from fhir_server.conformance.config import ROLES, RunConfig
from fhir_server.conformance.context import Session, TestContext
from fhir_server.conformance.http import BackendServicesToken, FhirClient, KitError, Response
from fhir_server.conformance.model import (
    ERROR,
    FAIL,
    PASS,
    SKIP,
    WARN,
    CheckFailed,
    Exchange,
    Finding,
    RunReport,
    Stop,
    TestCase,
    TestResult,
    outcome_of,
)
from fhir_server.conformance.receiver import Receiver
from fhir_server.conformance.requirements import actor_spec
from fhir_server.conformance.scenario import Prerequisite, Scenario
from fhir_server.conformance.suites import build_suite

MARK = {PASS: "PASS", FAIL: "FAIL", WARN: "WARN", SKIP: "SKIP", "n/a": "N/A ", ERROR: "ERR "}
NOT_RESOURCES = {"Bundle", "OperationOutcome", "Parameters", "CapabilityStatement"}


def discover_token_url(base: str, timeout: float) -> str:
    """The token endpoint from SMART discovery (or the CapabilityStatement's oauth-uris)."""
    try:
        resp = requests.get(f"{base.rstrip('/')}/.well-known/smart-configuration",
                            headers={"Accept": "application/json"}, timeout=timeout)
        if resp.status_code == 200 and resp.json().get("token_endpoint"):
            return str(resp.json()["token_endpoint"])
        cap = requests.get(f"{base.rstrip('/')}/metadata",
                           headers={"Accept": "application/fhir+json"}, timeout=timeout).json()
        for rest in cap.get("rest") or []:
            for ext in (rest.get("security") or {}).get("extension") or []:
                for sub in ext.get("extension") or []:
                    if sub.get("url") == "token":
                        return str(sub["valueUri"])
    except (requests.RequestException, ValueError) as exc:
        raise KitError(f"cannot discover the token endpoint of {base}: {exc}") from exc
    raise KitError(f"{base} publishes no token endpoint; give --token-url")


def make_clients(config: RunConfig) -> dict[str, FhirClient]:
    """One client per role; roles without their own party act as the source."""
    token_url = config.token_url
    if config.auth == "backend" and not token_url:
        token_url = discover_token_url(config.base, config.timeout)
    clients: dict[str, FhirClient] = {}
    for role in ROLES:
        party = config.parties.get(role) or config.parties.get("source")
        auth = None
        if config.auth == "backend":
            if party is None or not party.client_id or party.key_file is None:
                raise KitError("--auth backend needs --client-id and --key-file")
            auth = BackendServicesToken(party.client_id, party.key_file, token_url,
                                        config.scope, config.timeout)
        clients[role] = FhirClient(config.base, role, auth, config.timeout)
    return clients


def _collect(session: Session) -> Any:
    def listener(resp: Response) -> None:
        body = resp.json() if "json" in resp.content_type else None
        if not isinstance(body, dict):
            return
        if body.get("resourceType") == "Bundle":
            for entry in body.get("entry") or []:
                res = entry.get("resource") if isinstance(entry, dict) else None
                if isinstance(res, dict) and res.get("resourceType") not in NOT_RESOURCES:
                    session.returned.append(res)
        elif body.get("resourceType") not in NOT_RESOURCES and body.get("id"):
            session.returned.append(body)
    return listener


class Progress:
    """The terminal lines."""

    def __init__(self, out: TextIO, total: int, quiet: bool) -> None:
        self.out, self.total, self.quiet, self.n = out, total, quiet, 0

    def line(self, result: TestResult) -> None:
        self.n += 1
        if self.quiet:
            return
        width = len(str(self.total))
        self.out.write(f"[{self.n:>{width}}/{self.total}] {MARK[result.outcome]} "
                       f"{result.test.level:<6} {result.test.id:<40} "
                       f"{result.test.title}  ({result.elapsed_ms:.0f} ms)\n")
        if result.outcome in (FAIL, WARN, ERROR, SKIP, "n/a"):
            for finding in result.findings[:3]:
                self.out.write(f"{'':>{2 * width + 4}}{finding.level}: {finding.message}\n")
            if result.reason:
                self.out.write(f"{'':>{2 * width + 4}}{result.reason}\n")
        self.out.flush()


def run_test(test: TestCase, session: Session) -> TestResult:
    ctx = TestContext(session, test.level)
    exchanges: list[Exchange] = []
    for client in session.clients.values():
        client.recorders.append(exchanges.append)
    started = time.perf_counter()
    result = TestResult(test, PASS)
    try:
        test.run(ctx)
        result.outcome = outcome_of(test.level, ctx.findings)
    except Stop as stop:
        result.outcome, result.reason = stop.outcome, stop.reason
        if ctx.findings:  # a check failed before the test gave up: that counts
            result.outcome = outcome_of(test.level, ctx.findings)
    except CheckFailed:
        result.outcome = outcome_of(test.level, ctx.findings)
    except Prerequisite as exc:  # data the test needed could not be made or read
        result.outcome, result.reason = SKIP, f"test data not available ({exc})"
        if ctx.findings:
            result.outcome = outcome_of(test.level, ctx.findings)
    except (ConnectionError, KitError) as exc:
        result.outcome, result.reason = ERROR, str(exc)
    except Exception as exc:  # noqa: BLE001  (a malformed answer must not stop the run)
        result.outcome = ERROR
        result.reason = f"the kit could not finish: {type(exc).__name__}: {exc}"
        ctx.findings.append(Finding(test.level, result.reason))
    finally:
        for client in session.clients.values():
            client.recorders.remove(exchanges.append)
    result.elapsed_ms = (time.perf_counter() - started) * 1000
    result.findings, result.notes = ctx.findings, ctx.notes
    result.exchanges = ctx.extra_exchanges + exchanges
    return result


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(config: RunConfig, out: TextIO | None = None) -> RunReport:
    """Run the selected tests for `config.actor`; returns the report (not yet written)."""
    out = out or sys.stdout
    started = _now()
    spec = actor_spec(config.actor)
    clients = make_clients(config)
    session = Session(config, spec, clients, Scenario(config, clients))
    listener = _collect(session)
    for client in clients.values():
        client.listeners.append(listener)
    try:
        resp = clients["source"].get("metadata")
    except ConnectionError as exc:
        raise KitError(f"cannot reach the server: {exc}") from exc
    session.capability_exchange = resp.exchange
    if resp.status == 200 and isinstance(resp.json(), dict):
        session.capability = resp.json()
    else:
        session.capability_error = f"GET [base]/metadata answered {resp.status}"
    selected = [t for t in build_suite(config.actor) if config.selected(t.id)]
    if any(t.group == "subscriptions" for t in selected):
        session.receiver = Receiver(config.listen, config.callback_url)
    remote = any("validate" in session.server_operations(r)
                 for r in ("Task", "ServiceRequest", "Procedure"))
    session.validation = "the kit's built-in SDOHCC/US Core checker" + (
        " and the server's $validate (with the profile parameter)" if remote else
        " (the server offers no $validate)")
    if not config.quiet:
        out.write(f"Gravity SDOH Clinical Care conformance: {config.actor} at {config.base}\n"
                  f"{len(selected)} tests; returned resources validated with "
                  f"{session.validation}\n")
    progress = Progress(out, len(selected), config.quiet)
    results = []
    try:
        for test in selected:
            result = run_test(test, session)
            results.append(result)
            progress.line(result)
    finally:
        # the kit's Subscriptions go even with --keep: their endpoint stops with the run
        cleanup = session.scenario.cleanup(("Subscription",) if config.keep else ())
        if session.receiver is not None:
            session.receiver.stop()
    if config.keep:
        cleanup += [f"kept (--keep): {ref}" for _role, ref in session.scenario.created
                    if not ref.startswith("Subscription/")]
    return RunReport(config.base, config.actor, started, _now(), results, session.validation,
                     cleanup)
