"""The conformance resources this package publishes (CodeSystems and their ValueSets; the
OperationDefinitions are in fhir_server/interactions/operation_definitions), and the status
reasons in words for the apps."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def _load(folder: str) -> tuple[dict, ...]:
    return tuple(json.loads(p.read_text(encoding="utf-8"))
                 for p in sorted((_HERE / folder).glob("*.json")))


def code_systems() -> list[dict]:
    """The CodeSystems we publish (the stalled-referral businessStatus codes, the referral
    status reasons) and the ValueSet of the reasons."""
    return [json.loads(json.dumps(c)) for c in _load("codesystems")]


def status_reasons(status: str) -> list[tuple[str, str]]:
    """(code, display) of the referral-status-reason codes meant for a Task `status`
    (rejected, on-hold, failed), in the CodeSystem's order; `other` last."""
    system = next(c for c in _load("codesystems") if c.get("id") == "referral-status-reason"
                  and c["resourceType"] == "CodeSystem")
    return [(c["code"], c["display"]) for c in system["concept"]
            if any(p.get("valueCode") == status for p in c.get("property") or [])
            and c["code"] != "all-candidates-declined"]
