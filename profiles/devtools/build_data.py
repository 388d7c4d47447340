"""Developer tool: build the compact base-R4 element data and the shipped terminology.

Called by ``profiles.devtools.fsh_convert``; reads ../shared at development time only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from profiles.devtools.fsh_convert import FHIR_SD, REPO, SDOH, SHARED, USCORE, write_gz

R4 = SHARED / "fhir-r4"
DERIVED = SHARED / "gravity" / "derived-from-fsh"

# Profile URLs we reference but do not ship, with their resource type (for reference checks).
EXTERNAL_PROFILE_TYPES = {
    f"{USCORE}/StructureDefinition/us-core-encounter": "Encounter",
    f"{USCORE}/StructureDefinition/us-core-questionnaireresponse": "QuestionnaireResponse",
    f"{USCORE}/StructureDefinition/us-core-relatedperson": "RelatedPerson",
    f"{USCORE}/StructureDefinition/us-core-careplan": "CarePlan",
    f"{FHIR_SD}condition-assertedDate": "Extension",
    f"{FHIR_SD}resource-pertainsToGoal": "Extension",
}

UC_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
UC_CATEGORY_CODES = ["sdoh", "functional-status", "disability-status", "cognitive-status",
                     "treatment-intervention-preference", "care-experience-preference",
                     "observation-adi-documentation"]

# Hand-written US Core 7.0.0 / backport value sets (compose only; large external code systems
# are included by system, with the IG's filters kept so membership is "unknown" inside them).
EXTRA_VALUESETS: list[dict[str, Any]] = [
    {"id": "us-core-procedure-code", "url": f"{USCORE}/ValueSet/us-core-procedure-code",
     "version": "7.0.0", "name": "USCoreProcedureCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "71388002"}]},
         {"system": "http://www.ama-assn.org/go/cpt"},
         {"system": "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"},
         {"system": "http://www.cms.gov/Medicare/Coding/ICD10"},
         {"system": "http://ada.org/cdt"},
         {"system": "http://loinc.org"}]}},
    {"id": "us-core-condition-code", "url": f"{USCORE}/ValueSet/us-core-condition-code",
     "version": "7.0.0", "name": "USCoreConditionCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "404684003"}]},
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "243796009"}]},
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "272379006"}]},
         {"system": "http://hl7.org/fhir/sid/icd-10-cm"},
         {"system": "http://hl7.org/fhir/sid/icd-9-cm"}]}},
    {"id": "us-core-survey-codes", "url": f"{USCORE}/ValueSet/us-core-survey-codes",
     "version": "7.0.0", "name": "USCoreSurveyCodes",
     "compose": {"include": [{"system": "http://loinc.org",
                              "filter": [{"property": "CLASSTYPE", "op": "=", "value": "4"}]}]}},
    {"id": "us-core-goal-description", "url": f"{USCORE}/ValueSet/us-core-goal-description",
     "version": "7.0.0", "name": "USCoreGoalCodes",
     "compose": {"include": [
         {"system": "http://snomed.info/sct",
          "filter": [{"property": "concept", "op": "is-a", "value": "404684003"}]},
         {"system": "http://loinc.org"}]}},
    {"id": "us-core-problem-or-health-concern",
     "url": f"{USCORE}/ValueSet/us-core-problem-or-health-concern", "version": "7.0.0",
     "name": "USCoreProblemOrHealthConcern",
     "compose": {"include": [
         {"system": "http://terminology.hl7.org/CodeSystem/condition-category",
          "concept": [{"code": "problem-list-item"}]},
         {"system": "http://hl7.org/fhir/us/core/CodeSystem/condition-category",
          "concept": [{"code": "health-concern"}]}]}},
    {"id": "us-core-screening-assessment-condition-category",
     "url": f"{USCORE}/ValueSet/us-core-screening-assessment-condition-category",
     "version": "7.0.0", "name": "USCoreScreeningAssessmentConditionCategory",
     "compose": {"include": [{"system": UC_CAT,
                              "concept": [{"code": c} for c in UC_CATEGORY_CODES]}]}},
    {"id": "us-core-screening-assessment-observation-category",
     "url": f"{USCORE}/ValueSet/us-core-screening-assessment-observation-category",
     "version": "7.0.0", "name": "USCoreScreeningAssessmentObservationCategory",
     "compose": {"include": [{"system": UC_CAT,
                              "concept": [{"code": c} for c in UC_CATEGORY_CODES]}]}},
    {"id": "us-core-simple-observation-category",
     "url": f"{USCORE}/ValueSet/us-core-simple-observation-category", "version": "7.0.0",
     "name": "USCoreSimpleObservationCategory",
     "compose": {"include": [
         {"system": UC_CAT, "concept": [{"code": c} for c in UC_CATEGORY_CODES]},
         {"system": OBS_CAT, "concept": [{"code": c} for c in (
             "social-history", "vital-signs", "imaging", "laboratory", "procedure", "survey",
             "exam", "therapy", "activity")]}]}},
    # The two DocumentReference value sets of US Core 7.0.0 (HL7/US-Core input/resources).
    {"id": "us-core-documentreference-type",
     "url": f"{USCORE}/ValueSet/us-core-documentreference-type", "version": "7.0.0",
     "name": "USCoreDocumentReferenceType",
     "compose": {"include": [
         {"system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
          "concept": [{"code": "UNK", "display": "unknown"}]},
         {"system": "http://loinc.org",
          "filter": [{"property": "SCALE_TYP", "op": "=", "value": "DOC"}]}]}},
    {"id": "us-core-documentreference-category",
     "url": f"{USCORE}/ValueSet/us-core-documentreference-category", "version": "7.0.0",
     "name": "USCoreDocumentReferenceCategory",
     "compose": {"include": [{
         "system": f"{USCORE}/CodeSystem/us-core-documentreference-category",
         "concept": [{"code": "clinical-note", "display": "Clinical Note"}]}]}},
    {"id": "backport-content-value-set",
     "url": "http://hl7.org/fhir/uv/subscriptions-backport/ValueSet/backport-content-value-set",
     "version": "1.1.0", "name": "BackportContentValueSet",
     "compose": {"include": [{
         "system": "http://hl7.org/fhir/uv/subscriptions-backport/CodeSystem/"
                   "backport-content-code-system",
         "concept": [{"code": c} for c in ("empty", "id-only", "full-resource")]}]}},
]


def _entries(path: Path) -> list[dict[str, Any]]:
    return [e["resource"] for e in json.loads(path.read_text("utf-8"))["entry"]]


def _type_codes(el: dict[str, Any]) -> list[str]:
    out = []
    for t in el.get("type") or []:
        code = t.get("code", "")
        if code.startswith("http://hl7.org/fhirpath/System."):
            code = "System." + code.rsplit(".", 1)[1]
        out.append(code)
    return out


# Invariants the base validator implements natively (profiles/base_r4.py and friends).
NATIVE_CONSTRAINTS = {"ele-1", "ext-1", "dom-2", "dom-3", "dom-4", "dom-5", "ref-1", "txt-1",
                      "txt-2"}


def _is_best_practice(c: dict[str, Any]) -> bool:
    return any(x.get("url", "").endswith(("best-practice", "bestpractice")) and
               x.get("valueBoolean") for x in c.get("extension", []))


class _Expander:
    """Expands the R4 core value sets that list their codes (enough for required bindings)."""

    def __init__(self) -> None:
        pool = _entries(R4 / "valuesets.json")
        self.vs = {r["url"]: r for r in pool if r["resourceType"] == "ValueSet"}
        self.cs = {r["url"]: r for r in pool if r["resourceType"] == "CodeSystem"}

    def codes(self, url: str, depth: int = 0) -> list[list[str]] | None:
        """[[system, code], ...] of a value set, or None when it cannot be expanded offline."""
        vs = self.vs.get(url.partition("|")[0])
        if vs is None or depth > 5 or vs.get("compose", {}).get("exclude"):
            return None
        out: list[list[str]] = []
        for inc in vs.get("compose", {}).get("include", []):
            if inc.get("filter"):
                return None
            for sub in inc.get("valueSet", []):
                nested = self.codes(sub, depth + 1)
                if nested is None:
                    return None
                out.extend(nested)
            system = inc.get("system")
            if not system:
                continue
            if inc.get("concept"):
                out.extend([system, c["code"]] for c in inc["concept"])
                continue
            cs = self.cs.get(system)
            if cs is None or cs.get("content") != "complete":
                return None
            out.extend([system, code] for code in _all_codes(cs.get("concept", [])))
        return sorted(map(list, {tuple(x) for x in out})) or None


def _all_codes(concepts: list[dict[str, Any]]) -> list[str]:
    out: list[str] = []
    for c in concepts:
        out.append(c["code"])
        out.extend(_all_codes(c.get("concept", [])))
    return out


def _primitive_regex(sd: dict[str, Any]) -> str | None:
    for el in sd["snapshot"]["element"]:
        if el["path"].endswith(".value"):
            for t in el.get("type", []):
                for x in t.get("extension", []):
                    if x["url"].endswith("regex"):
                        return x["valueString"]
    return None


def _element_row(el: dict[str, Any], expander: _Expander) -> dict[str, Any]:
    row: dict[str, Any] = {"n": el.get("min", 0), "x": el.get("max", "*"),
                           "t": _type_codes(el)}
    targets = sorted({tp.rsplit("/", 1)[-1] for t in el.get("type") or []
                      if t.get("code") == "Reference"
                      for tp in t.get("targetProfile", [])})
    if targets:
        row["p"] = targets
    profiled = {t["code"]: t["profile"][0].rsplit("/", 1)[-1] for t in el.get("type") or []
                if t.get("profile") and t.get("code") == "Quantity"}
    if profiled:
        row["q"] = profiled
    if el.get("contentReference"):
        row["r"] = el["contentReference"].lstrip("#")
    b = el.get("binding") or {}
    if b.get("strength") == "required" and b.get("valueSet"):
        codes = expander.codes(b["valueSet"])
        if codes is not None:
            row["b"] = {"vs": b["valueSet"].partition("|")[0], "codes": codes}
    return row


def build_base(sds: list[dict[str, Any]], out: Path) -> None:
    """Write profiles/base/r4-elements.json.gz: the element table of every R4 type and
    resource (cardinality, types, reference targets, required bindings that expand offline),
    every core invariant not implemented natively, type kinds, choice stems, primitive
    regexes; and profiles/base/r4-extensions.json.gz (core extension definitions)."""
    profiled = {sd["type"] for sd in sds}
    expander = _Expander()
    table: dict[str, dict[str, Any]] = {}
    constraints: dict[str, list[dict[str, str]]] = {}
    bindings: dict[str, dict[str, str]] = {}
    kinds: dict[str, list[Any]] = {}
    primitives: dict[str, str] = {}
    choices: dict[str, set[str]] = {}
    for res in _entries(R4 / "profiles-types.json") + _entries(R4 / "profiles-resources.json"):
        if res.get("resourceType") != "StructureDefinition":
            continue
        name = res["id"]
        base = res.get("baseDefinition", "").rsplit("/", 1)[-1] or None
        constraint_profile = res.get("derivation") == "constraint"
        if constraint_profile and res.get("kind") != "complex-type":
            continue  # profiles in profiles-resources (e.g. vital signs) are not base rules
        kinds[name] = [res["kind"], base, bool(res.get("abstract"))]
        if res["kind"] == "primitive-type":
            primitives[name] = _primitive_regex(res) or ""
        elems: dict[str, Any] = {}
        for el in res.get("snapshot", {}).get("element", []):
            if not constraint_profile:
                elems[el["path"]] = _element_row(el, expander)
                if el["path"].endswith("[x]"):
                    stem = el["path"].rsplit(".", 1)[-1][:-3]
                    choices.setdefault(stem, set()).update(_type_codes(el))
            if name in profiled and not constraint_profile:
                b = el.get("binding") or {}
                if b.get("strength") == "required" and b.get("valueSet"):
                    bindings[el["path"]] = {"strength": "required", "valueSet": b["valueSet"]}
        own = res.get("differential", {}).get("element", [])
        for el in own:
            for c in el.get("constraint", []):
                if c["key"] in NATIVE_CONSTRAINTS or not c.get("expression") or \
                        _is_best_practice(c):
                    continue
                constraints.setdefault(name, []).append({
                    "key": c["key"], "severity": c["severity"], "human": c["human"],
                    "expression": c["expression"], "path": el["path"]})
        if not constraint_profile:
            table[name] = elems
    out.mkdir(parents=True, exist_ok=True)
    write_gz(out / "r4-elements.json.gz", {
        "elements": table, "constraints": constraints, "bindings": bindings,
        "kinds": kinds, "primitives": primitives,
        "choices": {k: sorted(v) for k, v in choices.items()}})
    write_gz(out / "r4-extensions.json.gz", build_extensions(expander))
    (out / "external-profile-types.json").write_text(
        json.dumps(EXTERNAL_PROFILE_TYPES, indent=1, sort_keys=True) + "\n", "utf-8")


def build_extensions(expander: _Expander) -> dict[str, Any]:
    """url -> {ctx: [[type, expression]], mod, v: value types | [] for complex, t: target
    types, b: required codes, sub: {url: {n, x, v, t}}} for every R4 core extension."""
    out: dict[str, Any] = {}
    for sd in _entries(R4 / "extension-definitions.json"):
        if sd.get("resourceType") != "StructureDefinition":
            continue
        els = sd["snapshot"]["element"]
        root = next(e for e in els if e["id"] == "Extension")
        entry: dict[str, Any] = {
            "ctx": [[c["type"], c["expression"]] for c in sd.get("context", [])],
            "mod": bool(root.get("isModifier")),
        }
        entry.update(_value_rule(els, "Extension", expander))
        subs: dict[str, Any] = {}
        for el in els:
            if el["path"] == "Extension.extension" and el.get("sliceName"):
                prefix = el["id"]
                url_el = next((e for e in els if e["id"] == f"{prefix}.url"), {})
                sub_url = url_el.get("fixedUri") or el["sliceName"]
                subs[sub_url] = {"n": el.get("min", 0), "x": el.get("max", "*"),
                                 **_value_rule(els, prefix, expander)}
        if subs:
            entry["sub"] = subs
        out[sd["url"]] = entry
    return out


def _value_rule(els: list[dict[str, Any]], prefix: str, expander: _Expander) -> dict[str, Any]:
    value = next((e for e in els if e["id"] == f"{prefix}.value[x]"), None)
    if value is None or value.get("max") == "0":
        return {"v": []}
    rule: dict[str, Any] = {"v": _type_codes(value), "vn": value.get("min", 0)}
    targets = sorted({tp.rsplit("/", 1)[-1] for t in value.get("type") or []
                      for tp in t.get("targetProfile", [])})
    if targets and "Resource" not in targets:
        rule["t"] = targets
    b = value.get("binding") or {}
    if b.get("strength") == "required" and b.get("valueSet"):
        codes = expander.codes(b["valueSet"])
        if codes is not None:
            rule["b"] = {"vs": b["valueSet"].partition("|")[0], "codes": codes}
    return rule


def _referenced_valuesets(sds: list[dict[str, Any]], base_bindings: list[str]) -> set[str]:
    urls = set(base_bindings)
    for sd in sds:
        for el in sd["differential"]["element"]:
            if "binding" in el:
                urls.add(el["binding"]["valueSet"])
    urls.add(f"{USCORE}/ValueSet/us-core-problem-or-health-concern")  # memberOf in SDOH-Con-2
    return urls


def build_terminology(sds: list[dict[str, Any]], out: Path) -> None:
    """Write the ValueSets/CodeSystems needed to check our bindings offline."""
    import gzip

    with gzip.open(REPO / "profiles" / "base" / "r4-elements.json.gz") as fh:
        base = json.load(fh)
    wanted = _referenced_valuesets(sds, [b["valueSet"] for b in base["bindings"].values()])
    core = {r["url"]: r for r in _entries(R4 / "valuesets.json")}
    derived = {}
    for f in DERIVED.glob("*.json"):
        r = json.loads(f.read_text("utf-8"))
        if r["resourceType"] in ("ValueSet", "CodeSystem"):
            derived[r["url"]] = r
    extra = {v["url"]: {"resourceType": "ValueSet", "status": "active", **v}
             for v in EXTRA_VALUESETS}
    pool = {**core, **derived, **extra}
    shipped: dict[str, dict[str, Any]] = {}
    todo = [u.partition("|")[0] for u in wanted]
    while todo:
        url = todo.pop()
        if url in shipped or url not in pool:
            continue
        res = pool[url]
        shipped[url] = res
        for inc in res.get("compose", {}).get("include", []) + res.get("compose", {}).get(
                "exclude", []):
            todo.extend(v.partition("|")[0] for v in inc.get("valueSet", []))
            if inc.get("system") and not inc.get("concept"):
                todo.append(inc["system"])  # code system (shipped when we have it)
    cs_by_url = {r["url"]: r for r in pool.values() if r["resourceType"] == "CodeSystem"}
    cs_by_url.update({r.get("valueSet"): r for r in cs_by_url.values() if r.get("valueSet")})
    # code systems referenced by system-only includes
    for res in list(shipped.values()):
        for inc in res.get("compose", {}).get("include", []):
            sysurl = inc.get("system")
            if sysurl and sysurl in cs_by_url and cs_by_url[sysurl]["resourceType"] == "CodeSystem":
                shipped[sysurl] = cs_by_url[sysurl]
    sdoh_cs = f"{SDOH}/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
    shipped[sdoh_cs] = derived[sdoh_cs]
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    for res in shipped.values():
        slim = {k: v for k, v in res.items() if k not in ("text", "extension", "contact",
                                                           "jurisdiction", "meta")}
        name = f"{slim['resourceType']}-{slim['id']}.json"
        (out / name).write_text(json.dumps(no_empty_strings(slim), indent=1) + "\n", "utf-8")
    print(f"wrote {len(shipped)} ValueSets/CodeSystems; missing:",
          sorted(u.partition('|')[0] for u in wanted if u.partition('|')[0] not in shipped))


def no_empty_strings(node: Any) -> Any:
    """A copy of `node` without empty-string values (FHIR forbids them)."""
    if isinstance(node, dict):
        return {k: no_empty_strings(v) for k, v in node.items() if v != ""}
    if isinstance(node, list):
        return [no_empty_strings(v) for v in node if v != ""]
    return node


def main() -> int:
    """Rebuild only the base R4 data from ../shared (profiles as shipped)."""
    sds = [json.loads(f.read_text("utf-8"))
           for f in sorted((REPO / "profiles" / "structuredefinitions").glob("*.json"))]
    build_base(sds, REPO / "profiles" / "base")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
