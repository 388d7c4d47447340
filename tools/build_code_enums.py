"""Developer tool: from the official R4 JSON Schema, extract the required-binding code lists
(`enum`) and the element-type graph that reaches them, into
fhir_server/data/r4_code_enums.json.gz (used by profiles/base_r4.py at run time).

Run from the repo root with ../shared present: python tools/build_code_enums.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT.parent / "shared" / "fhir-r4" / "fhir.schema.json"
OUT = ROOT / "fhir_server" / "data" / "r4_code_enums.json.gz"


def _target(prop: dict) -> tuple[str, object] | None:
    node = prop.get("items", prop)
    if "enum" in node:
        return ("enum", sorted(node["enum"]))
    ref = node.get("$ref", "")
    if ref.startswith("#/definitions/"):
        return ("ref", ref.split("/")[-1])
    return None


def main() -> None:
    schema = json.loads(SCHEMA.read_text())
    types = set(json.loads((ROOT / "fhir_server" / "data" / "r4_resource_types.json").read_text()))
    graph: dict[str, dict[str, tuple[str, object]]] = {}
    for name, definition in schema["definitions"].items():
        props = {}
        for prop, spec in (definition.get("properties") or {}).items():
            if prop.startswith("_") or prop == "resourceType":
                continue
            target = _target(spec)
            if target:
                props[prop] = target
        graph[name] = props
    # keep only definitions that can reach an enum (fixed point)
    useful: set[str] = {n for n, p in graph.items() if any(t[0] == "enum" for t in p.values())}
    useful.add("ResourceList")
    changed = True
    while changed:
        changed = False
        for name, props in graph.items():
            if name in useful:
                continue
            if any(t[0] == "ref" and t[1] in useful for t in props.values()):
                useful.add(name)
                changed = True
    out = {}
    for name in sorted(useful):
        if name == "ResourceList":
            continue
        if "_" not in name and name[0].isupper() and name in schema["discriminator"]["mapping"] \
                and name not in types:
            continue  # non-R4 resource types in this schema copy
        props = {p: list(t) for p, t in graph[name].items()
                 if t[0] == "enum" or t[1] in useful}
        if props:
            out[name] = props
    OUT.write_bytes(gzip.compress(json.dumps(out, separators=(",", ":")).encode(), mtime=0))
    print(f"{len(out)} definitions -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
