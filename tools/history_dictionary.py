"""Build the preset dictionary that history bodies are compressed with.

    python tools/history_dictionary.py      # writes fhir_server/storage/history_dictionaries/1.bin

A deflate preset dictionary is text the compressor may refer back to as if it came just
before each body: JSON keys, systems, codes and profile URLs that FHIR bodies repeat. This
one is the Gravity SDOH Clinical Care IG 2.3.0 examples (`tests/data/gravity`, CC0), compact
JSON without narrative, the kinds of resource this server stores most placed last (deflate
reaches nearer text with shorter codes), cut to deflate's 32 KiB window.

A dictionary in use is never changed: stored bodies name theirs by number
(`fhir_server/storage/history_bodies.py`). A better one is saved under a new number.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "tests" / "data" / "gravity" / "examples-2.3.0"
OUT = ROOT / "fhir_server" / "storage" / "history_dictionaries" / "1.bin"
WINDOW = 32 * 1024
# Most frequent kinds last: the referral workflow, then screening, then the directory.
LAST_FIRST = ["Task", "ServiceRequest", "Patient", "QuestionnaireResponse", "Observation",
              "Procedure", "Organization", "Practitioner", "Location", "HealthcareService",
              "Condition", "Consent", "Goal"]


def _rank(resource: dict) -> int:
    kind = resource.get("resourceType", "")
    return -LAST_FIRST.index(kind) if kind in LAST_FIRST else -len(LAST_FIRST)


def build() -> bytes:
    """The dictionary bytes (deterministic for the same examples)."""
    examples = [json.loads(path.read_text(encoding="utf-8"))
                for path in sorted(EXAMPLES.glob("*.json"))]
    examples.sort(key=_rank)  # stable: file-name order within a kind
    parts = []
    for resource in examples:
        resource.pop("text", None)
        parts.append(json.dumps(resource, separators=(",", ":"), ensure_ascii=False))
    return "".join(parts).encode()[-WINDOW:]


def main() -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(build())
    print(f"{OUT.relative_to(ROOT)}: {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
