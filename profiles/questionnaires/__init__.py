"""Our screening Questionnaires (PHQ-9, GAD-7, PHQ-2, GAD-2), loaded at start-up.

Canonical URLs are our own (``http://mh-referral.example.org/fhir/Questionnaire/<key>``,
version 1.0.0): these are SDC *derived* Questionnaires (observationExtract added,
observationLinkPeriod removed), so they must not reuse another publisher's canonical.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from fhir_server.json_tree import copy_tree

_DIR = Path(__file__).resolve().parent
FILES = ("phq-9.json", "gad-7.json", "phq-2.json", "gad-2.json")


@lru_cache(maxsize=1)
def _load() -> tuple[dict, ...]:
    out = []
    for name in FILES:
        with (_DIR / name).open(encoding="utf-8") as fh:
            out.append(json.load(fh))
    return tuple(out)


def load_questionnaires() -> list[dict]:
    """All our Questionnaires, as fresh copies (callers may mutate them)."""
    return [copy_tree(q) for q in _load()]


def _index() -> dict[str, dict]:
    index: dict[str, dict] = {}
    for q in _load():
        index[f"{q['url']}|{q['version']}"] = q
        index.setdefault(q["url"], q)  # unversioned reference: the (only) current version
    return index


def get_questionnaire(canonical: str) -> dict | None:
    """Look up one of our Questionnaires by canonical ``url`` or ``url|version``.

    Returns a copy, or None when the canonical is not ours (or names an unknown version).
    A ``#fragment`` is not accepted: these are not contained resources.
    """
    found = _index().get(canonical.strip())
    return copy_tree(found) if found is not None else None


def canonical_of(questionnaire: dict) -> str:
    """``url|version`` of a Questionnaire (just ``url`` when it has no version)."""
    url = questionnaire.get("url", "")
    version = questionnaire.get("version")
    return f"{url}|{version}" if version else url
