"""Development tool: derive the shipped search data from the official R4 definitions.

Run from the repository root: `python -m fhir_server.search.data.build SOURCE_DIR`, where
SOURCE_DIR holds `fhir-r4/` (the R4 definitions: profiles-resources.json, profiles-types.json,
search-parameters.json, compartmentdefinition-patient.json, from
https://hl7.org/fhir/R4/definitions.json.zip) and `gravity/derived-from-fsh/` (the Gravity
SDOH Clinical Care SearchParameters, from the IG package hl7.fhir.us.sdoh-clinicalcare).
Never used at run time; writes `search_data.json.gz` next to this file:
per resource type its SearchParameters with each FHIRPath union branch compiled to walker
steps (or kept as FHIRPath when not a plain path), summary and mandatory elements, and the
Patient compartment.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
GRAVITY_SPS = ("SearchParameter-Task-output-reference.json",
               "SearchParameter-ServiceRequest-supporting-info.json")
# Parameters served from the resources table columns rather than by extraction.
COLUMN_PARAMS = {"_id", "_lastUpdated"}
# Not supported: full text and named queries.
UNSUPPORTED = {"_text", "_content", "_query", "_list", "_filter", "_has", "_type"}

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_AS_PAREN = re.compile(rf"^\((.+?) as ({_IDENT})\)$")
_STEP = re.compile(
    rf"^(?:(?P<field>{_IDENT})"
    rf"|(?:as|ofType)\((?P<type>{_IDENT})\)"
    rf"|where\(resolve\(\) is (?P<ref>{_IDENT})\)"
    rf"|where\((?P<wf>{_IDENT})\s*=\s*'(?P<wv>[^']*)'\))$"
)


def split_top(expr: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses and quotes."""
    out, depth, quote, cur = [], 0, False, []
    i = 0
    while i < len(expr):
        ch = expr[i]
        if ch == "'":
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if not quote and depth == 0 and expr.startswith(sep, i):
            out.append("".join(cur).strip())
            cur = []
            i += len(sep)
            continue
        cur.append(ch)
        i += 1
    out.append("".join(cur).strip())
    return out


class TypeModel:
    """Element types from the StructureDefinition snapshots (resources and datatypes)."""

    def __init__(self, source: Path) -> None:
        self.elements: dict[str, dict[str, Any]] = {}
        self.kinds: dict[str, str] = {}
        self.sds: dict[str, dict[str, Any]] = {}
        for name in ("profiles-types.json", "profiles-resources.json"):
            bundle = json.loads((source / "fhir-r4" / name).read_text())
            for e in bundle["entry"]:
                sd = e["resource"]
                if sd.get("resourceType") != "StructureDefinition":
                    continue
                if sd.get("derivation") == "constraint":
                    continue
                self.kinds[sd["type"]] = sd["kind"]
                self.sds[sd["type"]] = sd
                for el in sd["snapshot"]["element"]:
                    self.elements[el["path"]] = el

    def child(self, parent_path: str, parent_type: str | None,
              name: str) -> tuple[str, dict] | None:
        """Resolve element `name` under the element at parent_path (typed parent_type)."""
        candidates = []
        if parent_type and parent_type not in ("BackboneElement", "Element"):
            candidates.append(f"{parent_type}.{name}")
        candidates.append(f"{parent_path}.{name}")
        for path in candidates:
            for p in (path, path + "[x]"):
                el = self.elements.get(p)
                if el is not None:
                    if "contentReference" in el:
                        ref = el["contentReference"].lstrip("#")
                        return ref, {**self.elements[ref], "max": el.get("max")}
                    return p, el
        return None


def compile_branch(branch: str, res_type: str, model: TypeModel) -> dict[str, Any] | None:
    """Compile one union branch to walker steps, or a FHIRPath fallback; None if not ours."""
    m = _AS_PAREN.match(branch)
    if m:
        branch = f"{m.group(1)}.as({m.group(2)})"
    parts = split_top(branch, ".")
    head = parts[0]
    if re.fullmatch(r"[a-z][A-Za-z0-9]*", head):  # R4 defect: "name | alias" without type
        parts, head = [res_type, *parts], res_type
        branch = f"{res_type}.{branch}"
    if head not in (res_type, "Resource", "DomainResource"):
        return None
    steps: list[list[Any]] = []
    cur_path, cur_type, types = head, head, [head]
    choice_open = False
    for part in parts[1:]:
        sm = _STEP.match(part)
        if not sm:
            return _fallback(branch, res_type)
        if sm.group("field"):
            name = sm.group("field")
            if cur_type is None:
                return _fallback(branch, res_type)
            found = model.child(cur_path, cur_type, name)
            if found is None:
                return _fallback(branch, res_type)
            path, el = found
            el_types = [t["code"] for t in el.get("type", [])]
            if path.endswith("[x]"):
                steps.append(["c", name, [_cap(t) for t in el_types]])
                choice_open, types, cur_type = True, el_types, None
            else:
                steps.append(["f", name])
                choice_open, types = False, el_types
                cur_type = el_types[0] if len(el_types) == 1 else None
            cur_path = path.removesuffix("[x]")
        elif sm.group("type"):
            t = sm.group("type")
            if not choice_open:
                # ofType on a non-choice element: a type check that always holds or never.
                if t not in types and t.lower() not in [x.lower() for x in types]:
                    return _fallback(branch, res_type)
                continue
            real = [x for x in types if x.lower() == t.lower()]
            if not real:
                return _fallback(branch, res_type)
            steps[-1][2] = [_cap(real[0])]
            types, cur_type, choice_open = real, real[0], False
        elif sm.group("ref"):
            steps.append(["r", sm.group("ref")])
        else:
            steps.append(["w", sm.group("wf"), sm.group("wv")])
    return {"steps": steps, "types": types}


def _cap(t: str) -> str:
    return t[0].upper() + t[1:]


def _fallback(branch: str, res_type: str) -> dict[str, Any]:
    rewritten = re.sub(r"resolve\(\) is ([A-Za-z]+)",
                       r"reference.startsWith('\1/')", branch)
    rewritten = re.sub(r"^(Resource|DomainResource)\.", f"{res_type}.", rewritten)
    return {"fhirpath": rewritten}


def _description(sp: dict[str, Any], rt: str) -> str:
    """The description line for this resource type (multi-resource SPs list one per type)."""
    text = sp.get("description") or ""
    for line in text.splitlines():
        m = re.match(rf"\* \[{rt}\]\([^)]*\): (.*)", line.strip())
        if m:
            return m.group(1).strip()
    return text.splitlines()[0].strip()[:300] if text else ""


def _compile_components(sp: dict[str, Any], rt: str, entry: dict[str, Any],
                        by_url: dict[str, Any], model: TypeModel) -> bool:
    """Attach compiled component branches to each base branch of a composite parameter."""
    comp_types = []
    for comp in sp.get("component", []):
        csp = by_url.get(comp["definition"])
        if csp is None:
            return False
        comp_types.append(csp["type"])
    entry["components"] = comp_types
    bases = [b for b in split_top(sp.get("expression") or "", "|") if b]
    compiled_bases = []
    for base in bases:
        if not base.startswith(rt):
            continue
        comps = []
        for comp in sp["component"]:
            branches = [compile_branch(f"{base}.{cb}", rt, model)
                        for cb in split_top(comp["expression"], "|")]
            if any(b is None or "fhirpath" in b for b in branches):
                return False
            # Steps relative to the base element.
            depth = len(split_top(base, ".")) - 1
            comps.append([{"steps": b["steps"][depth:], "types": b["types"]} for b in branches])
        compiled_bases.append({"steps": compile_branch(base, rt, model)["steps"],
                               "components": comps})
    entry["branches"] = compiled_bases
    return bool(compiled_bases)


def build(source: Path) -> dict[str, Any]:
    model = TypeModel(source)
    sps = [e["resource"] for e in json.loads(
        (source / "fhir-r4" / "search-parameters.json").read_text())["entry"]]
    for name in GRAVITY_SPS:
        sps.append(json.loads((source / "gravity" / "derived-from-fsh" / name).read_text()))
    for path in sorted((HERE / "own").glob("SearchParameter-*.json")):  # our own features'
        sps.append(json.loads(path.read_text()))
    resource_types = sorted(t for t, k in model.kinds.items()
                            if k == "resource" and t not in ("Resource", "DomainResource"))
    by_url = {sp["url"]: sp for sp in sps}
    out: dict[str, Any] = {"types": {}}
    for rt in resource_types:
        params: dict[str, Any] = {}
        for sp in sps:
            bases = sp["base"]
            if rt not in bases and "Resource" not in bases and not (
                    "DomainResource" in bases and rt not in ("Bundle", "Binary", "Parameters")):
                continue
            code = sp["code"]
            if code in UNSUPPORTED:
                continue
            entry: dict[str, Any] = {
                "type": sp["type"], "url": sp["url"],
                "description": _description(sp, rt),
                "target": sp.get("target", []),
            }
            if code not in COLUMN_PARAMS:
                branches = []
                for br in split_top(sp.get("expression") or "", "|"):
                    if not br:
                        continue
                    c = compile_branch(br, rt, model)
                    if c is not None:
                        branches.append(c)
                if not branches:
                    continue
                if sp["type"] == "reference" and all(
                        b.get("fhirpath", "").endswith(".resource") for b in branches):
                    continue  # Bundle composition/message: entries are not stored resources
                entry["branches"] = branches
            if sp["type"] == "composite" and not _compile_components(sp, rt, entry, by_url, model):
                continue
            params[code] = entry
        sd = model.sds[rt]
        summary, mandatory = [], []
        for el in sd["snapshot"]["element"]:
            parts = el["path"].split(".")
            if len(parts) != 2:
                continue
            name = parts[1].removesuffix("[x]")
            if el.get("isSummary"):
                summary.append(name)
            if el.get("min", 0) >= 1:
                mandatory.append(name)
        out["types"][rt] = {"params": params, "summary": summary, "mandatory": mandatory}
    comp = json.loads((source / "fhir-r4" / "compartmentdefinition-patient.json").read_text())
    out["patient_compartment"] = {r["code"]: r.get("param", []) for r in comp["resource"]
                                  if r.get("param")}
    return out


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    data = build(Path(sys.argv[1]))
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    (HERE / "search_data.json.gz").write_bytes(gzip.compress(raw, 9, mtime=0))
    print(f"{len(data['types'])} types, {len(raw)} bytes raw")


if __name__ == "__main__":
    main()
