"""Developer tool: cut the parts of the official R4 JSON schema that the fuzz suite needs
out of `fhir.schema.json` into tests/fuzz/r4-referral-schema.json.gz (not run by tests).

    python -m tests.fuzz.build_schema /path/to/fhir-r4/fhir.schema.json

Kept: the referral resource types, each with every definition it reaches inlined (one
self-contained schema per type). Changed so that
hypothesis-jsonschema can generate from it (it needs a finite, non-recursive schema):
descriptions dropped; `"type": "object"` made explicit; extension, modifierExtension,
contained, text and the `_element` primitive-extension properties dropped; the properties
that close a reference cycle (Identifier.assigner, ...) dropped; arrays limited to 3 items.
Every resource generated from it is still valid against the full schema.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOTS = ("Patient", "Organization", "PractitionerRole", "ServiceRequest", "Task",
         "QuestionnaireResponse", "Consent", "Condition", "Observation", "Procedure")
DROPPED = {"extension", "modifierExtension", "contained", "text"}
MAX_DEPTH = 3  # object levels with datatype properties (a resource is level 0)
OUT = Path(__file__).with_name("r4-referral-schema.json.gz")


def _ref(node: dict) -> str | None:
    target = node.get("$ref") or (node.get("items") or {}).get("$ref")
    return target.rsplit("/", 1)[-1] if target else None


def build(full: dict[str, Any]) -> dict[str, Any]:
    definitions = full["definitions"]
    kept: dict[str, Any] = {}
    on_stack: list[str] = []

    def visit(name: str) -> None:
        if name in kept:
            return
        source = definitions[name]
        node = {k: v for k, v in source.items() if k != "description"}
        props = {}
        kept[name] = node  # before the children: a ref back to `name` is a cycle
        on_stack.append(name)
        for prop, schema in (source.get("properties") or {}).items():
            if prop in DROPPED or prop.startswith("_"):
                continue
            schema = {k: v for k, v in schema.items() if k != "description"}
            target = _ref(schema)
            if target == "ResourceList" or target in on_stack:
                continue  # any-resource choices and reference cycles
            if target is not None:
                visit(target)
            if schema.get("type") == "array":
                schema["maxItems"] = 3
            props[prop] = schema
        on_stack.pop()
        if "properties" in source:
            node["type"] = "object"  # the R4 schema leaves it implicit
            node["properties"] = props
            node["required"] = [r for r in source.get("required", []) if r in props]
            if not node["required"]:
                node.pop("required")

    for root in ROOTS:
        visit(root)
    return {root: inline(kept, kept[root], 0) for root in ROOTS}


def inline(kept: dict[str, Any], node: Any, depth: int) -> Any:
    """The schema with every $ref replaced by its definition. Below MAX_DEPTH object levels
    only primitive properties are kept (hypothesis-jsonschema rebuilds nested strategies
    on every draw: deep schemas generate slowly, and the server's depth limits are tested
    by the mutations instead)."""
    if isinstance(node, list):
        return [inline(kept, item, depth) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return inline(kept, kept[node["$ref"].rsplit("/", 1)[-1]], depth)
    out = {}
    for key, value in node.items():
        if key == "properties":
            value = {name: schema for name, schema in value.items()
                     if depth < MAX_DEPTH or _is_primitive(kept, schema)}
            out[key] = {name: inline(kept, schema, depth + 1) for name, schema in value.items()}
            if "required" in node:
                out["required"] = [r for r in node["required"] if r in value]
        elif key != "required":
            out[key] = inline(kept, value, depth)
    return out


def _is_primitive(kept: dict[str, Any], schema: dict) -> bool:
    target = _ref(schema)
    return target is None or "properties" not in kept[target]


def main(argv: list[str]) -> int:
    full = json.loads(Path(argv[0]).read_text())
    schema = build(full)
    OUT.write_bytes(gzip.compress(json.dumps(schema, sort_keys=True).encode(), mtime=0))
    print(f"{OUT}: {', '.join(schema)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
