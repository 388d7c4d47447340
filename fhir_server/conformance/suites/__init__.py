"""The tests, by group. `build_suite(actor)` returns them in run order."""

from __future__ import annotations

from fhir_server.conformance.model import TestCase


def build_suite(actor: str) -> list[TestCase]:
    """Every test for `actor`, in the order they run (capabilities first, profiles last:
    the profile tests check every resource the earlier tests got back)."""
    from fhir_server.conformance.suites import (
        capability,
        formats,
        platform,
        profiles,
        search,
        security,
        subscriptions,
        workflow,
    )

    tests: list[TestCase] = []
    for module in (capability, security, formats, search, workflow, platform, subscriptions,
                   profiles):
        tests += module.tests(actor)
    return tests
