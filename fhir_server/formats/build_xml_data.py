"""Developer tool: derive the XML element model shipped in ``data/xml_model.json.gz``.

Reads the official FHIR R4 StructureDefinitions (the ``fhir-r4`` folder of the R4
definitions, https://hl7.org/fhir/R4/definitions.json.zip; never used at run time) and
writes, for every resource type, complex datatype and backbone element, the ordered list of
child elements with their types and cardinality::

    python -m fhir_server.formats.build_xml_data path/to/fhir-r4

File layout (JSON)::

    {"fhirVersion": "4.0.1",
     "primitives": {"boolean": "boolean", "positiveInt": "integer", "string": "string", ...},
     "resources": ["Account", ...],
     "types": {"Patient": [[name, [type codes], many, choice], ...],
               "Patient.contact": [...], "HumanName": [...], ...}}

Type codes are primitive names, complex type names, ``Resource`` (a nested resource),
``xhtml`` (the narrative div), ``xmlAttr`` (rendered as an XML attribute: ``Element.id`` and
``Extension.url``) or a backbone key containing a dot (``Patient.contact``).

The copies of the definitions this was built from came from a server distribution that adds a
few non-R4 elements (``Meta.project``, ``Meta.author``..., R5 elements of ``ResearchStudy`` and
``EvidenceVariable``, ``Binary.url``, ``DeviceDefinition.bodySite``) and the R4B resource
``SubscriptionStatus``. They are removed here: an element is kept only when the R4 JSON schema
(``fhir.schema.json``) also defines it, the known additions to ``Meta`` are dropped explicitly
(the schema copy carries them too) and StructureDefinitions of another FHIR version are skipped.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

DATA_FILE = Path(__file__).resolve().parent / "data" / "xml_model.json.gz"
_FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
# Elements the server distribution added to Meta, absent from FHIR R4 4.0.1.
_NOT_R4 = {"Meta.project", "Meta.author", "Meta.onBehalfOf", "Meta.account", "Meta.accounts",
           "Meta.compartment"}
_JSON_KIND = {
    "boolean": "boolean",
    "integer": "integer",
    "positiveInt": "integer",
    "unsignedInt": "integer",
    "decimal": "decimal",
}


def _structure_definitions(source: Path) -> list[dict[str, Any]]:
    out = []
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((source / name).read_text(encoding="utf-8"))
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res["resourceType"] == "StructureDefinition":
                out.append(res)
    return out


def _type_code(element: dict[str, Any], type_entry: dict[str, Any]) -> str:
    """The FHIR type code of one element type, resolving FHIRPath system types."""
    base_path = element.get("base", {}).get("path", "")
    if "xmlAttr" in element.get("representation", []) or base_path in ("Element.id",
                                                                           "Extension.url"):
        return "xmlAttr"
    code = type_entry["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in type_entry.get("extension", []):
            if ext.get("url") == _FHIR_TYPE_EXT:
                code = ext["valueUrl"]
                break
        if base_path == "Resource.id":
            code = "id"
    return code


def _element_list(sd: dict[str, Any]) -> dict[str, list[list[Any]]]:
    """Ordered children for the root and every backbone element of one StructureDefinition."""
    elements = sd["snapshot"]["element"]
    paths_with_children = {el["path"].rsplit(".", 1)[0] for el in elements if "." in el["path"]}
    root = sd["type"]
    tables: dict[str, list[list[Any]]] = {root: []}
    for el in elements:
        path = el["path"]
        if "." not in path or ":" in el.get("id", ""):
            continue
        parent, name = path.rsplit(".", 1)
        choice = name.endswith("[x]")
        if choice:
            name = name[:-3]
        many = el.get("max") not in ("0", "1")
        if "contentReference" in el:
            codes = [el["contentReference"].lstrip("#")]
        elif path in paths_with_children:
            codes = [path]
            tables.setdefault(path, [])
        else:
            codes = [_type_code(el, t) for t in el.get("type", [])]
        if not codes:
            raise ValueError(f"{path}: no type")
        tables.setdefault(parent, []).append([name, codes, int(many), int(choice)])
    return tables


def _schema_properties(table: str, children: list[list[Any]],
                       definitions: dict[str, Any]) -> set[str] | None:
    """Property names of the JSON-schema definition that matches one table best.

    The schema names backbones ``Root_Last`` and disambiguates clashes with a digit suffix
    (``ClaimResponse_Detail1``), so the candidate sharing most element names wins.
    """
    parts = table.split(".")
    if len(parts) == 1:
        found = definitions.get(table)
        return set(found.get("properties", {})) if found else None
    last = parts[0] + "_" + parts[-1][0].upper() + parts[-1][1:]
    candidates = [last] + [f"{last}{i}" for i in range(1, 10)]
    wanted = {c[0] for c in children}
    best: set[str] | None = None
    best_score = 0
    for key in candidates:
        if key not in definitions:
            continue
        props = set(definitions[key].get("properties", {}))
        score = sum(1 for n in wanted if n in props or any(p.startswith(n) for p in props))
        if score > best_score:
            best, best_score = props, score
    return best


def _keep_r4_only(types: dict[str, list[list[Any]]], schema: dict[str, Any]) -> list[str]:
    """Drop elements the R4 JSON schema does not define; return the dropped paths."""
    definitions = schema["definitions"]
    dropped = []
    for table, children in types.items():
        props = _schema_properties(table, children, definitions)
        kept = []
        for child in children:
            name, codes, _many, choice = child
            names = [name + c[0].upper() + c[1:] for c in codes] if choice else [name]
            path = f"{table}.{name}"
            in_schema = props is None or name == "id" or any(n in props for n in names)
            if path in _NOT_R4 or not in_schema:
                dropped.append(path)
                continue
            if choice and props is not None:
                child[1] = [c for c, n in zip(codes, names, strict=True) if n in props]
            kept.append(child)
        children[:] = kept
    return dropped


def build(source: Path) -> dict[str, Any]:
    """Build the element model from the StructureDefinitions found in ``source``."""
    primitives: dict[str, str] = {}
    resources: list[str] = []
    types: dict[str, list[list[Any]]] = {}
    for sd in _structure_definitions(source):
        if sd.get("fhirVersion", "4.0.1") != "4.0.1":
            continue
        if sd.get("derivation") == "constraint" or sd["kind"] == "logical":
            continue
        if sd["kind"] == "primitive-type":
            if sd["type"] != "xhtml":
                primitives[sd["type"]] = _JSON_KIND.get(sd["type"], "string")
            continue
        if sd.get("abstract"):
            continue
        if sd["kind"] == "resource":
            resources.append(sd["type"])
        types.update(_element_list(sd))
    schema = json.loads((source / "fhir.schema.json").read_text(encoding="utf-8"))
    dropped = _keep_r4_only(types, schema)
    print("not R4, dropped:", ", ".join(dropped))
    types = {k: v for k, v in types.items() if k.split(".")[0] in types}
    known = set(primitives) | set(types) | {"Resource", "xhtml", "xmlAttr"}
    for key, children in types.items():
        for name, codes, _many, _choice in children:
            missing = [c for c in codes if c not in known]
            if missing:
                raise ValueError(f"{key}.{name}: unknown type(s) {missing}")
    return {
        "fhirVersion": "4.0.1",
        "primitives": dict(sorted(primitives.items())),
        "resources": sorted(resources),
        "types": dict(sorted(types.items())),
    }


def main(argv: list[str]) -> None:
    """Regenerate the shipped data file."""
    if len(argv) != 2:
        raise SystemExit(__doc__)
    model = build(Path(argv[1]))
    raw = json.dumps(model, separators=(",", ":"), sort_keys=False).encode("utf-8")
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
    print(f"{DATA_FILE}: {len(model['resources'])} resources, {len(model['types'])} tables, "
          f"{len(raw)} bytes raw, {DATA_FILE.stat().st_size} bytes gzip")


if __name__ == "__main__":
    main(sys.argv)
