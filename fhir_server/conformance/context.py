"""What a running test sees: the shared session (clients, server capabilities, test data,
receiver) and its own findings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.conformance.config import RunConfig
from fhir_server.conformance.http import FhirClient, Response
from fhir_server.conformance.model import NA, SKIP, CheckFailed, Exchange, Finding, Stop
from fhir_server.conformance.receiver import Receiver
from fhir_server.conformance.requirements import ActorSpec
from fhir_server.conformance.scenario import Scenario


@dataclass
class Session:
    """Shared by every test of a run."""

    config: RunConfig
    spec: ActorSpec
    clients: dict[str, FhirClient]
    scenario: Scenario
    receiver: Receiver | None = None
    capability: dict[str, Any] | None = None  # the server's CapabilityStatement (JSON)
    capability_error: str = ""
    capability_exchange: Exchange | None = None  # shown with the capability tests' results
    returned: list[dict[str, Any]] = field(default_factory=list)  # resources the server sent
    subscriptions: list[tuple[str, str]] = field(default_factory=list)  # (role, ref)
    validation: str = ""

    def server_resource(self, res_type: str) -> dict[str, Any] | None:
        """The server's CapabilityStatement entry for `res_type`."""
        for rest in (self.capability or {}).get("rest") or []:
            if rest.get("mode", "server") != "server":
                continue
            for res in rest.get("resource") or []:
                if res.get("type") == res_type:
                    return res
        return None

    def server_operations(self, res_type: str) -> set[str]:
        res = self.server_resource(res_type) or {}
        ops = {o.get("name", "").lstrip("$") for o in res.get("operation") or []}
        for rest in (self.capability or {}).get("rest") or []:
            ops |= {o.get("name", "").lstrip("$") for o in rest.get("operation") or []}
        return ops


class TestContext:
    """The API tests use: checks, clients per role, the shared session."""

    def __init__(self, session: Session, level: str) -> None:
        self.session = session
        self.level = level
        self.findings: list[Finding] = []
        self.notes: list[str] = []
        self.extra_exchanges: list[Exchange] = []  # made before the test, shown with it

    @property
    def config(self) -> RunConfig:
        return self.session.config

    @property
    def data(self) -> Scenario:
        return self.session.scenario

    def client(self, role: str = "source") -> FhirClient:
        return self.session.clients[role]

    # checks ------------------------------------------------------------------------------
    def check(self, ok: Any, message: str, level: str | None = None) -> bool:
        """Record a finding when `ok` is false; returns bool(ok)."""
        if not ok:
            self.findings.append(Finding(level or self.level, message))
        return bool(ok)

    def require(self, ok: Any, message: str, level: str | None = None) -> None:
        """Like check, but the test stops here when it fails."""
        if not self.check(ok, message, level):
            raise CheckFailed(message)

    def note(self, message: str) -> None:
        self.notes.append(message)

    def skip(self, reason: str) -> None:
        raise Stop(SKIP, reason)

    def not_applicable(self, reason: str) -> None:
        raise Stop(NA, reason)

    def need_parties(self, *roles: str) -> None:
        """Skip unless these roles are distinct identities the server can tell apart."""
        if not self.config.distinct(*roles):
            self.skip(f"needs separate identities for {', '.join(roles)} "
                      "(--auth backend with --party ROLE=CLIENT_ID,KEY_FILE,ORGANIZATION)")

    def need_capability(self) -> dict[str, Any]:
        exchange = self.session.capability_exchange
        if exchange is not None and exchange not in self.extra_exchanges:
            self.extra_exchanges.append(exchange)
        if self.session.capability is None:
            self.skip(f"no CapabilityStatement: {self.session.capability_error}")
        return self.session.capability  # type: ignore[return-value]

    def expect_status(self, resp: Response, allowed: tuple[int, ...], what: str,
                      level: str | None = None) -> bool:
        return self.check(resp.status in allowed,
                          f"{what}: expected HTTP {'/'.join(map(str, allowed))}, got "
                          f"{resp.status} {_brief(resp)}", level)

    def expect_refused(self, resp: Response, what: str, level: str | None = None) -> bool:
        """A refusal is a 4xx with an OperationOutcome."""
        if not self.check(400 <= resp.status < 500,
                          f"{what} was accepted (HTTP {resp.status}); it must be refused",
                          level):
            return False
        body = resp.json()
        return self.check(isinstance(body, dict) and body.get("resourceType") ==
                          "OperationOutcome", f"{what}: refused with HTTP {resp.status} but "
                          "without an OperationOutcome", "SHOULD")


def _brief(resp: Response) -> str:
    body = resp.json()
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        return "(" + "; ".join(str(i.get("diagnostics") or i.get("code"))
                               for i in body.get("issue") or [])[:200] + ")"
    return ""
