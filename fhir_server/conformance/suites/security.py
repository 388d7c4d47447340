"""Security: SMART declared and discoverable, tokens required, TLS off loopback."""

from __future__ import annotations

from urllib.parse import urlparse

from fhir_server.conformance.context import TestContext
from fhir_server.conformance.model import Requirement, TestCase
from fhir_server.conformance.requirements import actor_spec, ig, spec

GROUP = "security"
SMART_SERVICE = "SMART-on-FHIR"
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _claims_smart(t: TestContext) -> bool:
    cap = t.need_capability()
    for rest in cap.get("rest") or []:
        for service in (rest.get("security") or {}).get("service") or []:
            if any(c.get("code") == SMART_SERVICE for c in service.get("coding") or []):
                return True
    return False


def _declared(t: TestContext) -> None:
    t.check(_claims_smart(t), "rest.security.service does not claim SMART-on-FHIR, which "
                              "every Gravity actor CapabilityStatement names")


def _discovery(t: TestContext) -> None:
    if not _claims_smart(t):
        t.not_applicable("the server does not claim SMART-on-FHIR security")
    resp = t.client().get(".well-known/smart-configuration", accept="application/json",
                          authenticated=False)
    t.require(resp.status == 200, f".well-known/smart-configuration answered {resp.status}")
    body = resp.json()
    t.require(isinstance(body, dict), ".well-known/smart-configuration is not JSON")
    t.check(body.get("token_endpoint"), "smart-configuration has no token_endpoint")
    t.check("client_credentials" in (body.get("grant_types_supported") or []),
            "smart-configuration does not list the client_credentials grant (Backend "
            "Services)", "SHOULD")
    t.check("private_key_jwt" in (body.get("token_endpoint_auth_methods_supported") or []),
            "smart-configuration does not list private_key_jwt", "SHOULD")


def _bearer_required(t: TestContext) -> None:
    if not _claims_smart(t):
        t.not_applicable("the server does not claim SMART-on-FHIR security")
    if t.config.auth == "none":
        t.skip("run with --auth backend to check that tokens are required")
    _sr, task = t.data.referral()
    resp = t.client().get(f"Task/{task['id']}", authenticated=False)
    t.check(resp.status == 401, f"reading a referral Task without a token answered "
                                f"{resp.status}; expected 401")
    resp = t.client().get("Task", params={"_id": task["id"]}, authenticated=False)
    t.check(resp.status == 401, f"searching Tasks without a token answered {resp.status}; "
                                "expected 401")


def _tls(t: TestContext) -> None:
    url = urlparse(t.config.base)
    if url.hostname in LOOPBACK:
        t.not_applicable("the server is on loopback: TLS is not checked")
    t.check(url.scheme == "https", f"the base URL uses {url.scheme}; PHI exchange needs TLS")


def tests(actor: str) -> list[TestCase]:
    cs = actor_spec(actor)
    declared = Requirement(f"CS {cs.canonical.rsplit('/', 1)[-1]}: rest.security", "SHALL",
                           "The actor's server declares SMART-on-FHIR security and meets the "
                           "IG's privacy and security requirements.", cs.canonical)
    return [
        TestCase("security.smart-declared", "CapabilityStatement claims SMART-on-FHIR", GROUP,
                 "SHALL", (declared, ig("priv-2")), _declared),
        TestCase("security.smart-discovery", "SMART configuration is discoverable", GROUP,
                 "SHALL", (spec("smart-discovery"),), _discovery),
        TestCase("security.token-required", "Requests without a token are refused (401)",
                 GROUP, "SHALL", (spec("smart-bearer"), ig("priv-1")), _bearer_required),
        TestCase("security.tls", "The base URL uses TLS (not checked on loopback)", GROUP,
                 "SHALL", (ig("priv-8"),), _tls),
    ]
