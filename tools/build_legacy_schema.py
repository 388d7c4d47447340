"""Developer tool: extract the R4 JSON Schema definitions for the R4 resource types that
fhir.resources R4B has no model for, into fhir_server/data/r4_schema_legacy_types.json.gz.

Run from the repo root with ../shared present: python tools/build_legacy_schema.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "fhir-r4" / "fhir.schema.json"
OUT = ROOT / "fhir_server" / "data" / "r4_schema_legacy_types.json.gz"


def _refs(node: object, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            found.add(ref.split("/")[-1])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def main() -> None:
    from fhir.resources.R4B import get_fhir_model_class

    schema = json.loads(SCHEMA.read_text())
    types = json.loads((ROOT / "fhir_server" / "data" / "r4_resource_types.json").read_text())
    legacy = []
    for name in types:
        try:
            get_fhir_model_class(name)
        except Exception:  # noqa: BLE001 - any failure means "no R4B model"
            legacy.append(name)
    wanted: set[str] = set()
    todo = list(legacy)
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        found: set[str] = set()
        _refs(schema["definitions"][name], found)
        # ResourceList pulls every resource in; contained resources are checked separately.
        todo.extend(sorted(f for f in found if f not in wanted and f != "ResourceList"))
    definitions = {k: schema["definitions"][k] for k in sorted(wanted)}
    definitions["ResourceList"] = {"type": "object", "properties": {"resourceType": {}}}
    out = {"$schema": schema.get("$schema"), "legacy_types": legacy, "definitions": definitions}
    OUT.write_bytes(gzip.compress(json.dumps(out, separators=(",", ":")).encode(), mtime=0))
    print(f"{len(legacy)} legacy types, {len(definitions)} definitions -> {OUT}")


if __name__ == "__main__":
    main()
