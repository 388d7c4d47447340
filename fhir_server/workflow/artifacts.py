"""The conformance resources this package publishes (OperationDefinitions, CodeSystem)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def _load(folder: str) -> tuple[dict, ...]:
    return tuple(json.loads(p.read_text(encoding="utf-8"))
                 for p in sorted((_HERE / folder).glob("*.json")))


def operation_definitions() -> list[dict]:
    """OperationDefinitions for $redirect, $timeline and $referral-metrics (copies)."""
    return [json.loads(json.dumps(o)) for o in _load("operations")]


def code_systems() -> list[dict]:
    """The CodeSystems we publish (the stalled-referral businessStatus codes)."""
    return [json.loads(json.dumps(c)) for c in _load("codesystems")]
