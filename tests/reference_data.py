"""Published FHIR material the tests read, shipped in `tests/data/` (origin and licence of
each file: `tests/data/SOURCES.md`). The repository stands alone: no test reads anything
outside it."""

from __future__ import annotations

import gzip
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
GRAVITY_EXAMPLES = DATA / "gravity" / "examples-2.3.0"
BACKPORT_SAMPLES = DATA / "gravity" / "backport-subscription-samples"
QUESTIONNAIRES = DATA / "questionnaires"
SUBSCRIPTIONS = DATA / "subscriptions"
INFERNO = SUBSCRIPTIONS / "inferno-subscriptions-test-kit"


def load(path: Path) -> Any:
    """A JSON file of `tests/data` (gzip-compressed when its name ends in `.gz`)."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    return json.loads(raw.decode("utf-8-sig"))


@cache
def fhir_schema() -> dict[str, Any]:
    """The official JSON Schema of FHIR R4 (4.0.1)."""
    return load(DATA / "fhir-r4" / "fhir.schema.json.gz")


@cache
def search_parameters() -> dict[str, Any]:
    """The official R4 SearchParameter Bundle (4.0.1)."""
    return load(DATA / "fhir-r4" / "search-parameters.json.gz")


@cache
def r4_examples() -> dict[str, Any]:
    """The R4 specification's own examples (file name -> resource): every example under 1 MB
    that is not a definition, plus a sample of its definitions (package
    hl7.fhir.r4.examples 4.0.1)."""
    return load(DATA / "fhir-r4" / "r4-examples.json.gz")
